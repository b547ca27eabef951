"""Lambda entry point: a scheduled event or a fleet job, its mailbox secret, run_mailbox()."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser import BaseModel, ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ConfigDict, StrictStr

from pop3_ingest.config import Settings
from pop3_ingest.domain.run import lease_owner, run_mailbox
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    JobError,
    SecretError,
    TlsError,
)
from pop3_ingest.handlers.observability import count, logger, metrics, report, tracer
from pop3_ingest.handlers.wiring import aws_clients, run_ports
from pop3_ingest.integrations.secrets import load_mailbox_config

__all__ = ["aws_clients", "lambda_handler", "logger"]


class MailboxEvent(BaseModel):
    """The schedule's event, or a manual one naming the mailbox's secret (else SECRET_ID)."""

    model_config = ConfigDict(hide_input_in_errors=True)
    secret_id: StrictStr | None = None


class Job(BaseModel):
    """One record of the dispatcher's FIFO queue: one mailbox to run."""

    model_config = ConfigDict(hide_input_in_errors=True)
    secret_id: StrictStr


# Jobs from the dispatcher's FIFO queue; a failed record blocks the rest of
# its message group, as FIFO order requires.
job_processor = SqsFifoPartialProcessor()

# Failures that belong to one mailbox: recorded in its state, logged and
# counted, and tried again at the next dispatch. Anything else fails the job,
# which SQS redelivers and finally moves to the jobs DLQ.
_MAILBOX_ERRORS = (AuthError, TlsError, ConnectError, ConnectionLost, ConfigError, SecretError)
_run = tracer.capture_method(run_mailbox)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        response = process_partial_response(
            event=event, record_handler=_run_job, processor=job_processor, context=context
        )
        return dict(response)
    return _run_one(event, context)


def _run_one(event: object, context: LambdaContext) -> dict[str, Any]:
    """One mailbox: the event's secret, else SECRET_ID."""
    try:
        settings = Settings.from_env()
        secret_id = _secret_id(event, settings)
        config = load_mailbox_config(secret_id)
    except (ConfigError, SecretError) as exc:
        count("ConfigInvalid")
        logger.error("configuration error", extra={"error": str(exc)})
        raise
    logger.append_keys(mailbox=config.mailbox)
    metrics.add_dimension(name="mailbox", value=config.mailbox)
    ports = run_ports(settings, context, lambda: load_mailbox_config(secret_id, fresh=True))
    owner = lease_owner(getattr(context, "aws_request_id", None))
    started = time.monotonic()
    outcome = _run(config, ports, owner=owner, auth_failure_limit=settings.auth_failure_limit)
    return report(outcome, started=started)


def _secret_id(event: object, settings: Settings) -> str:
    unusable = ConfigError("event field 'secret_id' must be a non-empty string")
    try:
        override = parse(event, MailboxEvent).secret_id if isinstance(event, dict) else None
    except ValidationError:
        raise unusable from None
    if override is not None and not override.strip():
        raise unusable
    secret_id = override or settings.secret_id
    if not secret_id:
        raise ConfigError("no mailbox secret: set SECRET_ID or pass 'secret_id' in the event")
    return secret_id


def _run_job(record: SQSRecord) -> dict[str, Any]:
    try:
        secret_id = parse(record.json_body, Job).secret_id
    except ValidationError as exc:
        raise JobError(f"job {record.message_id} has no 'secret_id' string") from exc
    except ValueError as exc:
        raise JobError(f"job {record.message_id} is not JSON") from exc
    try:
        return _run_one({"secret_id": secret_id}, job_processor.lambda_context)
    except _MAILBOX_ERRORS as exc:
        return {"secret_id": secret_id, "error": type(exc).__name__, "detail": str(exc)}
    finally:
        # One mailbox per record: its metrics go out under its own dimension.
        metrics.flush_metrics()
        logger.remove_keys(["mailbox"])
