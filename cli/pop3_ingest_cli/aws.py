"""The AWS side of the CLI: its clients, and the bucket layout the options name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pop3_ingest.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class AwsClients:
    s3: S3Client
    sqs: SQSClient


def aws_clients() -> AwsClients:
    """Clients configured only by the SDK's own settings (profile, region, endpoint)."""
    import boto3  # imported on first use: --help should not pay for it
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5)
    session = boto3.session.Session()
    return AwsClients(
        s3=session.client("s3", config=config), sqs=session.client("sqs", config=config)
    )


def normalize_prefix(prefix: str) -> str:
    """``--key-prefix`` as the function's keys use it: relative, ending in ``/`` (or empty)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or ".." in prefix:
        raise ConfigError("--key-prefix must be a relative prefix such as 'mail/'")
    return prefix
