"""Lambda entry point: read settings, open the mailbox, run the core, report."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from pop3_ingest.config import MailboxConfig, Settings
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.state import LEASE_MARGIN_SECONDS, LEASE_OWNER, Failure, MailboxState
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    JobError,
    MailboxBusy,
    Pop3Error,
    Pop3IngestError,
    SecretError,
    TlsError,
)
from pop3_ingest.integrations.s3_state import STATE_CLIENT_CONFIG, S3StateStore, Snapshot
from pop3_ingest.integrations.s3_store import S3MessageStore
from pop3_ingest.integrations.secrets import load_mailbox_config
from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer
from pop3_ingest.pop3.connection import Pop3Mailbox

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# The core logs through the standard library; give it the same JSON output.
copy_config_to_registered_loggers(source_logger=logger, include={"pop3_ingest"})
# botocore logs whole response bodies at DEBUG, GetSecretValue's SecretString
# included: keep it quiet whatever level the root logger is given.
logging.getLogger("botocore").setLevel(logging.INFO)

# Standard retries with bounded timeouts: a throttled or flaky call is retried
# by the SDK; a dead endpoint fails the message instead of hanging the run.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=16,
)


# Time the handler needs after its last state write: the report and the metrics
# (local work, milliseconds). The deadline margin has to cover the rest.
_REPORT_SECONDS = 0.25


@dataclass(frozen=True)
class AwsClients:
    s3: S3Client
    # Without the mail store's conditional-write hook, and with short timeouts
    # and few retries: a state write must fit in what is left of the run.
    s3_state: S3Client
    sqs: SQSClient


@cache
def aws_clients() -> AwsClients:
    """Created on first use, then reused across warm invocations."""
    session = boto3.session.Session()
    return AwsClients(
        s3=session.client("s3", config=_BOTO_CONFIG),
        s3_state=session.client("s3", config=_BOTO_CONFIG.merge(STATE_CLIENT_CONFIG)),
        sqs=session.client("sqs", config=_BOTO_CONFIG),
    )


@cache
def message_store(bucket: str) -> S3MessageStore:
    return S3MessageStore(aws_clients().s3, bucket)


def state_store(settings: Settings, context: LambdaContext) -> S3StateStore:
    def damaged(_: str) -> None:
        metrics.add_metric(name="StateDamaged", unit=MetricUnit.Count, value=1)

    return S3StateStore(
        aws_clients().s3_state,
        settings.bucket,
        settings.key_prefix,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000 - _REPORT_SECONDS,
        on_damaged=damaged,
    )


# Jobs from the dispatcher's FIFO queue; a failed record blocks the rest of
# its message group, as FIFO order requires.
job_processor = SqsFifoPartialProcessor()

# Failures that belong to one mailbox: recorded in its state, logged and
# counted, and tried again at the next dispatch. Anything else fails the job,
# which SQS redelivers and finally moves to the jobs DLQ.
_MAILBOX_ERRORS = (AuthError, TlsError, ConnectError, ConnectionLost, ConfigError, SecretError)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        response = process_partial_response(
            event=event, record_handler=_run_job, processor=job_processor, context=context
        )
        return dict(response)
    override = event.get("secret_id") if isinstance(event, dict) else None
    return _run_one(override, context)


def _run_one(secret_override: object, context: LambdaContext) -> dict[str, Any]:
    """One mailbox: the given secret, else SECRET_ID."""
    try:
        settings = Settings.from_env()
        config = load_mailbox_config(_choose_secret(secret_override, settings))
    except (ConfigError, SecretError) as exc:
        metrics.add_metric(name="ConfigInvalid", unit=MetricUnit.Count, value=1)
        logger.error("configuration error", extra={"error": str(exc)})
        raise
    logger.append_keys(mailbox=config.mailbox)
    metrics.add_dimension(name="mailbox", value=config.mailbox)
    try:
        result = fetch_mailbox(config, settings, context)
    except AuthError:
        fresh = _rotated(config, secret_override, settings)
        if fresh is None:
            raise
        return fetch_mailbox(fresh, settings, context)
    if result["stopped"] == StopReason.AUTH_SUSPENDED.value:
        fresh = _rotated(config, secret_override, settings)
        if fresh is not None:
            return fetch_mailbox(fresh, settings, context)
    return result


def _rotated(config: MailboxConfig, override: object, settings: Settings) -> MailboxConfig | None:
    """The secret read again past the cache, if it changed since (a rotation)."""
    fresh = load_mailbox_config(_choose_secret(override, settings), fresh=True)
    if fresh.fingerprint() == config.fingerprint():
        return None
    logger.info("the secret changed since it was cached; logging in with the new one")
    return fresh


def _choose_secret(override: object, settings: Settings) -> str:
    if override is not None and (not isinstance(override, str) or not override.strip()):
        raise ConfigError("event field 'secret_id' must be a non-empty string")
    secret_id = override or settings.secret_id
    if not secret_id:
        raise ConfigError("no mailbox secret: set SECRET_ID or pass 'secret_id' in the event")
    return secret_id


def _run_job(record: SQSRecord) -> dict[str, Any]:
    try:
        job = json.loads(record.body)
    except ValueError as exc:
        raise JobError(f"job {record.message_id} is not JSON") from exc
    if not isinstance(job, dict) or not isinstance(job.get("secret_id"), str):
        raise JobError(f"job {record.message_id} has no 'secret_id' string")
    try:
        return _run_one(job["secret_id"], job_processor.lambda_context)
    except _MAILBOX_ERRORS as exc:
        return {"secret_id": job["secret_id"], "error": type(exc).__name__, "detail": str(exc)}
    finally:
        # One mailbox per record: its metrics go out under its own dimension.
        metrics.flush_metrics()
        logger.remove_keys(["mailbox"])


@tracer.capture_method
def fetch_mailbox(
    config: MailboxConfig, settings: Settings, context: LambdaContext
) -> dict[str, Any]:
    """One run for one mailbox, with its memory loaded before and saved after.

    At most one run works a mailbox at a time, whatever the mode and however
    the schedule and timeout overlap: a run first takes the lease in the
    mailbox's state (a conditional write), and gives it back with its last save.
    """
    started = time.monotonic()
    states = state_store(settings, context)
    owner = _lease_owner(context)
    current = states.read(config.mailbox)
    now = time.time()
    locked = RunSummary(mailbox=config.mailbox, stopped=StopReason.LOCKED)
    if _locked_by_other(current.state, owner, now):
        return _report(locked, started=started)
    skip = _skip_reason(current.state, config, settings, now)
    if skip is not None:
        return _report(RunSummary(mailbox=config.mailbox, stopped=skip), started=started)
    # Held to the end of this invocation at the latest: a run that dies
    # without giving it back blocks the mailbox no longer than it could run.
    until = now + context.get_remaining_time_in_millis() / 1000 + LEASE_MARGIN_SECONDS
    lease = states.take_lease(config.mailbox, owner, until, now, current)
    if lease is None:
        metrics.add_metric(name="MailboxLocked", unit=MetricUnit.Count, value=1)
        logger.warning("another run took this mailbox's lease first; not starting a second one")
        return _report(locked, started=started)
    state = lease.state.copy()
    state.last_attempt = now

    def quarantine(message: ServerMessage, failure: Failure) -> None:
        states.put_quarantine_record(
            config.mailbox,
            failure_key(message),
            {
                "mailbox": config.mailbox,
                "uidl": message.uidl,
                "size": message.size,
                "failures": failure.count,
                "error": failure.error,
                "first_failed_at": failure.first_at,
                "quarantined_at": failure.last_at,
                "policy": "left on the server; not retried until released",
            },
        )

    ingest = MailboxIngest(
        mailbox_name=config.mailbox,
        connect=lambda: Pop3Mailbox(
            config,
            timeout=settings.pop3_timeout_seconds,
            min_bytes_per_second=settings.min_transfer_bytes_per_second,
            # A read still going when half the margin is left is cut off, so the
            # run ends (and reports) before Lambda stops it.
            time_left=lambda: (
                context.get_remaining_time_in_millis() / 1000 - settings.deadline_margin_seconds / 2
            ),
        ),
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
            commit_every_seconds=settings.commit_every_seconds,
            poison_threshold=settings.poison_threshold,
        ),
        state=state,
        on_quarantine=quarantine,
    )
    try:
        summary = ingest.run()
    except MailboxBusy as exc:
        metrics.add_metric(name="MailboxBusy", unit=MetricUnit.Count, value=1)
        state.busy_streak += 1
        state.backoff_until = now + _busy_backoff(exc.code, state.busy_streak)
        logger.warning(
            "mailbox busy; backing off",
            extra={"code": exc.code, "error": str(exc), "retry_after": state.backoff_until},
        )
        _save(states, config, state, lease)
        summary = RunSummary(mailbox=config.mailbox, stopped=StopReason.BUSY)
        return _report(summary, started=started, busy_code=exc.code)
    except AuthError as exc:
        metrics.add_metric(name="LoginFailed", unit=MetricUnit.Count, value=1)
        if state.auth_fingerprint != config.fingerprint():
            state.auth_failures = 0
        state.auth_failures += 1
        state.auth_fingerprint = config.fingerprint()
        logger.error(
            "login failed",
            extra={"code": exc.code, "error": str(exc), "consecutive": state.auth_failures},
        )
        _save(states, config, state, lease)
        raise
    except (TlsError, ConnectError) as exc:
        metrics.add_metric(name="ConnectFailed", unit=MetricUnit.Count, value=1)
        logger.error("cannot reach the mailbox safely", extra={"error": str(exc)})
        _save(states, config, state, lease)
        raise
    except ConnectionLost as exc:
        # Lost before or while listing: nothing was deleted.
        metrics.add_metric(name="ConnectionLost", unit=MetricUnit.Count, value=1)
        logger.error("connection lost", extra={"error": str(exc)})
        _save(states, config, state, lease)
        raise
    except Pop3Error as exc:  # ProtocolError: UIDL or LIST refused, for one
        metrics.add_metric(name="ProtocolError", unit=MetricUnit.Count, value=1)
        logger.error("POP3 server answered what the run cannot use", extra={"error": str(exc)})
        _save(states, config, state, lease)
        raise
    except Exception:
        # Whatever broke, the next run must not wait for the lease to expire,
        # and the deletions committed so far are remembered.
        _save(states, config, state, lease)
        raise
    state.auth_failures = 0
    state.auth_fingerprint = config.fingerprint()
    if summary.stopped is not StopReason.BUSY:
        state.busy_streak = 0
    if ingest.login_delay:
        # RFC 2449: the server asked for this much time between logins.
        state.backoff_until = now + ingest.login_delay
    if summary.stopped is StopReason.COMPLETED:
        state.last_completed = time.time()
    _save(states, config, state, lease)
    return _report(summary, started=started)


def _skip_reason(
    state: MailboxState, config: MailboxConfig, settings: Settings, now: float
) -> StopReason | None:
    """Reasons not to log in at all this time; each is logged and counted."""
    if (
        state.auth_failures >= settings.auth_failure_limit
        and state.auth_fingerprint == config.fingerprint()
    ):
        metrics.add_metric(name="LoginSuspended", unit=MetricUnit.Count, value=1)
        logger.error(
            "login suspended after repeated failures; update the secret to resume",
            extra={"consecutive_failures": state.auth_failures},
        )
        return StopReason.AUTH_SUSPENDED
    if now < state.backoff_until:
        logger.info("backing off as the server asked", extra={"until": state.backoff_until})
        return StopReason.BACKOFF
    if config.interval_minutes and now < state.last_attempt + config.interval_minutes * 60 - 30:
        logger.info("not due yet", extra={"interval_minutes": config.interval_minutes})
        return StopReason.NOT_DUE
    return None


def _busy_backoff(code: str, streak: int) -> float:
    # In use: another client is draining it, try again soon. Temporary
    # failures and login delays: back off harder, up to an hour.
    base, cap = (30.0, 600.0) if code == "IN-USE" else (120.0, 3600.0)
    return float(min(cap, base * 2 ** (streak - 1)))


def _lease_owner(context: LambdaContext) -> str:
    """This invocation's request id: the same for a retry inside one invocation."""
    request_id = getattr(context, "aws_request_id", None)
    if isinstance(request_id, str) and LEASE_OWNER.fullmatch(request_id):
        return request_id
    return uuid.uuid4().hex


def _locked_by_other(state: MailboxState, owner: str, now: float) -> bool:
    holder = state.lease_holder(now)
    if holder is None or holder == owner:
        return False
    metrics.add_metric(name="MailboxLocked", unit=MetricUnit.Count, value=1)
    logger.warning(
        "another run is working this mailbox; not starting a second one",
        extra={"lease_owner": holder, "lease_until": state.lease_until},
    )
    return True


def _save(
    states: S3StateStore, config: MailboxConfig, state: MailboxState, lease: Snapshot
) -> None:
    """The run's last write: conditional, merged if another writer came first, and
    giving the lease back. Skipped with an error when it could overrun the deadline."""
    state.lease_owner = None
    state.lease_until = 0.0
    try:
        states.write(config.mailbox, state, lease)
    except Pop3IngestError as exc:
        # Mail is safe either way; losing the memory costs repeats, not messages.
        metrics.add_metric(name="StateNotSaved", unit=MetricUnit.Count, value=1)
        logger.error("run state not saved", extra={"error": str(exc)})


def _report(summary: RunSummary, *, started: float, busy_code: str | None = None) -> dict[str, Any]:
    for name, value, unit in (
        ("MessagesStored", summary.stored, MetricUnit.Count),
        ("MessagesAlreadyStored", summary.already_stored, MetricUnit.Count),
        ("MessagesDeleted", summary.deleted, MetricUnit.Count),
        ("MessagesFailed", summary.failed, MetricUnit.Count),
        ("BytesStored", summary.bytes_stored, MetricUnit.Bytes),
        ("MessagesLeftOnServer", summary.left_on_server, MetricUnit.Count),
        ("MessagesOversized", summary.oversized, MetricUnit.Count),
        ("MessagesQuarantined", summary.quarantined, MetricUnit.Count),
        ("MessagesReappeared", summary.reappeared, MetricUnit.Count),
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
        "deleted": summary.deleted,
        "failed": summary.failed,
        "bytes": summary.bytes_stored,
        "oversized": summary.oversized,
        "quarantined": summary.quarantined,
        "in_quarantine": summary.in_quarantine,
        "reappeared": summary.reappeared,
        "redeleted": summary.redeleted,
        "abandoned_sessions": summary.abandoned_sessions,
        "unlisted": summary.unlisted,
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
