"""The AWS side of the CLI: one boto3 Session per command, and the bucket layout the options name.

``--profile`` and ``--region`` choose the Session; without them the SDK's own
settings apply (``AWS_PROFILE``, ``AWS_DEFAULT_REGION`` or the profile's
region, ``AWS_ENDPOINT_URL``, the usual credential chain). Every client of a
command comes from that one Session, so no part of a command reads another
account or region than the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from botocore.config import Config

from pop3_ingest.errors import ConfigError

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5)


class Aws:
    """A command's AWS clients, each made on first use from one Session."""

    def __init__(self, profile: str | None = None, region: str | None = None) -> None:
        self.profile = profile
        self.region = region

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Aws:
        return cls(getattr(args, "profile", None), getattr(args, "region", None))

    @cached_property
    def session(self) -> boto3.session.Session:
        import boto3  # imported on first use: --help should not pay for it

        # ProfileNotFound (an unknown --profile) is raised here, as a BotoCoreError.
        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    @cached_property
    def s3(self) -> S3Client:
        return self.session.client("s3", config=CLIENT_CONFIG)

    @cached_property
    def sqs(self) -> SQSClient:
        return self.session.client("sqs", config=CLIENT_CONFIG)

    @cached_property
    def secretsmanager(self) -> SecretsManagerClient:
        return self.session.client("secretsmanager", config=CLIENT_CONFIG)

    @cached_property
    def cloudformation(self) -> CloudFormationClient:
        return self.session.client("cloudformation", config=CLIENT_CONFIG)

    def lambda_client(self, config: Config) -> LambdaClient:
        return self.session.client("lambda", config=config)


# How commands get their Aws: tests pass one that refuses, or points elsewhere.
AwsFactory = Callable[[argparse.Namespace], Aws]


def normalize_prefix(prefix: str) -> str:
    """``--key-prefix`` as the function's keys use it: relative, ending in ``/`` (or empty)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or ".." in prefix:
        raise ConfigError("--key-prefix must be a relative prefix such as 'mail/'")
    return prefix


def mailbox_name(text: str) -> str:
    """``--mailbox``, held to the rule of the function's own keys (or a ConfigError)."""
    from pop3_ingest.domain.message import object_key

    try:
        object_key("", text, "")
    except ValueError:
        raise ConfigError(
            f"--mailbox {text[:60]!r} is not a mailbox name (1-128 letters, digits and . _ @ + -)"
        ) from None
    return text
