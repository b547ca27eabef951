"""Lambda entry point: a scheduled event or a fleet job, its mailbox secret, run_mailbox()."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.parser import BaseModel, ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ConfigDict, StrictStr

from pop3_ingest.config import Settings
from pop3_ingest.domain.run import lease_owner, run_mailbox
from pop3_ingest.errors import ConfigError, SecretError
from pop3_ingest.handlers.jobs import run_jobs
from pop3_ingest.handlers.observability import count, logger, metrics, reporting, tracer
from pop3_ingest.handlers.wiring import aws_clients, run_ports
from pop3_ingest.integrations.secrets import load_mailbox_config

__all__ = ["aws_clients", "lambda_handler", "logger"]


class MailboxEvent(BaseModel):
    """The schedule's event, or a manual one naming the mailbox's secret (else SECRET_ID)."""

    model_config = ConfigDict(hide_input_in_errors=True)
    secret_id: StrictStr | None = None


_run = tracer.capture_method(run_mailbox)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        return run_jobs(event, context)  # Mode fleet: a batch from the jobs queue
    return _run_one(event, context)


def _run_one(event: object, context: LambdaContext) -> dict[str, Any]:
    """One mailbox: the event's secret, else SECRET_ID. Every ending has one "run finished" line."""
    with reporting() as report:
        try:
            settings = Settings.from_env()
            secret_id = report.secret_id = _secret_id(event, settings)
            config = load_mailbox_config(secret_id)
        except (ConfigError, SecretError) as exc:
            count("ConfigInvalid")
            logger.error("configuration error", extra={"error": str(exc)})
            raise
        logger.append_keys(mailbox=config.mailbox)
        # Mode single: the mailbox is a metric dimension; Mode fleet: never.
        report.identify(config.mailbox, settings.mode)
        ports = run_ports(settings, context, lambda: load_mailbox_config(secret_id, fresh=True))
        owner = lease_owner(getattr(context, "aws_request_id", None))
        outcome = _run(config, ports, owner=owner, auth_failure_limit=settings.auth_failure_limit)
        return report.finished(outcome)


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
