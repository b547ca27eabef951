"""Lambda entry point: read settings, open the mailbox, run the core, report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from pop3_ingest.adapters.s3_store import S3MessageStore
from pop3_ingest.adapters.secrets import load_mailbox_config
from pop3_ingest.adapters.sqs_announcer import SqsAnnouncer
from pop3_ingest.config import MailboxConfig, Settings
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    SecretError,
    TlsError,
)
from pop3_ingest.ingest import Deadline, IngestOptions, MailboxIngest, RunSummary, StopReason
from pop3_ingest.pop3 import Pop3Mailbox

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# The core logs through the standard library; give it the same JSON output.
copy_config_to_registered_loggers(source_logger=logger, include={"pop3_ingest"})

# Standard retries with bounded timeouts: a throttled or flaky call is retried
# by the SDK; a dead endpoint fails the message instead of hanging the run.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=16,
)


@dataclass(frozen=True)
class AwsClients:
    s3: S3Client
    sqs: SQSClient


@cache
def aws_clients() -> AwsClients:
    """Created on first use, then reused across warm invocations."""
    session = boto3.session.Session()
    return AwsClients(
        s3=session.client("s3", config=_BOTO_CONFIG),
        sqs=session.client("sqs", config=_BOTO_CONFIG),
    )


@cache
def message_store(bucket: str) -> S3MessageStore:
    return S3MessageStore(aws_clients().s3, bucket)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        settings = Settings.from_env()
        secret_id = _secret_id(event, settings)
        config = load_mailbox_config(secret_id)
    except (ConfigError, SecretError) as exc:
        metrics.add_metric(name="ConfigInvalid", unit=MetricUnit.Count, value=1)
        logger.error("configuration error", extra={"error": str(exc)})
        raise
    logger.append_keys(mailbox=config.mailbox)
    metrics.add_dimension(name="mailbox", value=config.mailbox)
    return fetch_mailbox(config, settings, context)


def _secret_id(event: object, settings: Settings) -> str:
    override = event.get("secret_id") if isinstance(event, dict) else None
    if override is not None and (not isinstance(override, str) or not override.strip()):
        raise ConfigError("event field 'secret_id' must be a non-empty string")
    secret_id = override or settings.secret_id
    if not secret_id:
        raise ConfigError("no mailbox secret: set SECRET_ID or pass 'secret_id' in the event")
    return secret_id


@tracer.capture_method
def fetch_mailbox(
    config: MailboxConfig, settings: Settings, context: LambdaContext
) -> dict[str, Any]:
    started = time.monotonic()
    ingest = MailboxIngest(
        mailbox_name=config.mailbox,
        connect=lambda: Pop3Mailbox(config, timeout=settings.pop3_timeout_seconds),
        store=message_store(settings.bucket),
        announcer=SqsAnnouncer(aws_clients().sqs, settings.queue_url),
        deadline=Deadline(context.get_remaining_time_in_millis, settings.deadline_margin_seconds),
        options=IngestOptions(
            key_prefix=settings.key_prefix,
            delete=config.delete,
            max_messages=settings.max_messages_per_run,
            max_message_size=config.max_message_size,
            pipeline_window=settings.pipeline_window,
            upload_workers=settings.upload_workers,
            commit_every_messages=settings.commit_every_messages,
            commit_every_bytes=settings.commit_every_bytes,
        ),
    )
    try:
        summary = ingest.run()
    except MailboxBusy as exc:
        metrics.add_metric(name="MailboxBusy", unit=MetricUnit.Count, value=1)
        logger.warning(
            "mailbox busy, will try next run", extra={"code": exc.code, "error": str(exc)}
        )
        summary = RunSummary(mailbox=config.mailbox, stopped=StopReason.BUSY)
        return _report(summary, started=started, busy_code=exc.code)
    except AuthError as exc:
        metrics.add_metric(name="LoginFailed", unit=MetricUnit.Count, value=1)
        logger.error("login failed", extra={"code": exc.code, "error": str(exc)})
        raise
    except (TlsError, ConnectError) as exc:
        metrics.add_metric(name="ConnectFailed", unit=MetricUnit.Count, value=1)
        logger.error("cannot reach the mailbox safely", extra={"error": str(exc)})
        raise
    except ConnectionLost as exc:
        # Lost before or while listing: nothing was deleted.
        metrics.add_metric(name="ConnectionLost", unit=MetricUnit.Count, value=1)
        logger.error("connection lost", extra={"error": str(exc)})
        raise
    return _report(summary, started=started)


def _report(summary: RunSummary, *, started: float, busy_code: str | None = None) -> dict[str, Any]:
    deleted = summary.deleted
    for name, value, unit in (
        ("MessagesStored", summary.stored, MetricUnit.Count),
        ("MessagesAlreadyStored", summary.already_stored, MetricUnit.Count),
        ("MessagesDeleted", deleted, MetricUnit.Count),
        ("MessagesFailed", summary.failed, MetricUnit.Count),
        ("BytesStored", summary.bytes_stored, MetricUnit.Bytes),
        ("MessagesLeftOnServer", summary.left_on_server, MetricUnit.Count),
        ("MessagesOversized", summary.oversized, MetricUnit.Count),
    ):
        metrics.add_metric(name=name, unit=unit, value=value)
    if summary.stopped is StopReason.COMPLETED:
        metrics.add_metric(name="RunsCompleted", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = {
        "mailbox": summary.mailbox,
        "messages_on_server": summary.messages_on_server,
        "stored": summary.stored,
        "already_stored": summary.already_stored,
        "announced": summary.announced,
        "deleted": deleted,
        "failed": summary.failed,
        "bytes": summary.bytes_stored,
        "oversized": summary.oversized,
        "left_on_server": summary.left_on_server,
        "sessions": summary.sessions,
        "stopped": summary.stopped.value,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    if busy_code:
        result["busy_code"] = busy_code
    if summary.failures:
        result["failures"] = summary.failures
    logger.info("run finished", extra={"summary": result})
    return result
