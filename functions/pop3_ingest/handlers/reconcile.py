"""Mode fleet: keep one EventBridge Scheduler schedule per mailbox secret (docs/fleet.md).

Invoked by:

- a Secrets Manager API call seen through CloudTrail (a tag added or removed,
  a secret created, changed, deleted or restored): that secret alone;
- its daily schedule, and every deploy of the stack: all secrets;
- by hand: ``{"secret_id": "<name or ARN>"}`` for one, ``{}`` for all.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pop3_ingest.config import FleetSettings
from pop3_ingest.domain.reconcile import Change, ReconcileReport
from pop3_ingest.errors import ScheduleError
from pop3_ingest.handlers.observability import logger, metrics
from pop3_ingest.integrations.scheduler import build_reconciler

CLOUDTRAIL_CALL = "AWS API Call via CloudTrail"
# Where a Secrets Manager call's CloudTrail record names the secret: most calls
# take a SecretId; CreateSecret takes a Name.
_REQUEST_FIELDS = ("secretId", "name")


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reconciler, _ = build_reconciler(
        FleetSettings.from_env(),
        seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    scope = secret_of(event)
    if scope is None:
        return finish(reconciler.reconcile_all(), scope="all")
    if not scope:
        logger.warning("event names no secret: nothing to reconcile")
        return finish(ReconcileReport(), scope="none")
    return finish(reconciler.reconcile_secret(scope), scope=scope)


def secret_of(event: object) -> str | None:
    """The one secret an event is about; None: every secret; "": an event naming none."""
    if not isinstance(event, dict):
        return None
    if isinstance(event.get("secret_id"), str):
        return str(event["secret_id"]).strip()
    if event.get("detail-type") != CLOUDTRAIL_CALL:
        return None  # the daily schedule, a deploy, or {} by hand
    request = (event.get("detail") or {}).get("requestParameters") or {}
    named = [request.get(key) for key in _REQUEST_FIELDS]
    return next((name for name in named if isinstance(name, str) and name), "")


def finish(report: ReconcileReport, *, scope: str) -> dict[str, Any]:
    """Metrics and the one "reconcile finished" line; an incomplete run fails (and is retried)."""
    changed = sum(report.changes[c] for c in (Change.CREATED, Change.UPDATED, Change.DELETED))
    unfinished = report.changes[Change.FAILED] + report.changes[Change.SKIPPED]
    metrics.add_metric(name="SchedulesChanged", unit=MetricUnit.Count, value=changed)
    metrics.add_metric(name="SchedulesFailed", unit=MetricUnit.Count, value=unfinished)
    result = {"scope": scope, **report.as_dict()}
    if report.complete:
        logger.info("reconcile finished", extra={"result": result})
        return result
    logger.error("reconcile incomplete", extra={"result": result})
    raise ScheduleError(f"{unfinished} schedule(s) not reconciled; see the log line's problems")
