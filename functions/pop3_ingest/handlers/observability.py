"""Logs, traces and metrics for both functions: the Powertools singletons, in one place.

Also where a run's outcome becomes metrics and the handler's result, and where
the run policy's counts and log lines go (:class:`PowertoolsObserver`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from pop3_ingest.domain.run import RunOutcome
from pop3_ingest.domain.summary import RunSummary, StopReason

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# The core logs through the standard library; give it the same JSON output.
# Its package logger is registered first, so modules imported later inherit it.
logging.getLogger("pop3_ingest")
copy_config_to_registered_loggers(source_logger=logger, include={"pop3_ingest"})
# botocore logs whole response bodies at DEBUG, GetSecretValue's SecretString
# included: keep it quiet whatever level the root logger is given.
logging.getLogger("botocore").setLevel(logging.INFO)


# Frames between the logging call and the policy's decision: Powertools' own
# method, PowertoolsObserver.log, the policy's logging helper.
_POLICY_CALLER = 4


def count(metric: str) -> None:
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)


class PowertoolsObserver:
    """The run policy's metrics and log lines, through the singletons above."""

    def count(self, metric: str) -> None:
        count(metric)

    def log(self, level: int, message: str, **fields: object) -> None:
        # Located where the policy decided: past this method and the policy's
        # one logging helper (RunObserver's contract), not at either of them.
        if level >= logging.ERROR:
            logger.error(message, extra=fields, stacklevel=_POLICY_CALLER)
        elif level >= logging.WARNING:
            logger.warning(message, extra=fields, stacklevel=_POLICY_CALLER)
        else:
            logger.info(message, extra=fields, stacklevel=_POLICY_CALLER)


def _summary_metrics(summary: RunSummary) -> tuple[tuple[str, int, MetricUnit], ...]:
    return (
        ("MessagesStored", summary.stored, MetricUnit.Count),
        ("MessagesAlreadyStored", summary.already_stored, MetricUnit.Count),
        ("MessagesDeleted", summary.deleted, MetricUnit.Count),
        ("MessagesFailed", summary.failed, MetricUnit.Count),
        ("BytesStored", summary.bytes_stored, MetricUnit.Bytes),
        ("MessagesLeftOnServer", summary.left_on_server, MetricUnit.Count),
        ("MessagesOversized", summary.oversized, MetricUnit.Count),
        ("MessagesQuarantined", summary.quarantined, MetricUnit.Count),
        ("MessagesReappeared", summary.reappeared, MetricUnit.Count),
    )


def _result(summary: RunSummary) -> dict[str, Any]:
    return {
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
    }


def report(outcome: RunOutcome, *, started: float) -> dict[str, Any]:
    """The run's metrics and its "run finished" line; returns the handler's result."""
    summary = outcome.summary
    for name, value, unit in _summary_metrics(summary):
        metrics.add_metric(name=name, unit=unit, value=value)
    if summary.stopped is StopReason.COMPLETED:
        count("RunsCompleted")
    result = _result(summary)
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    if outcome.busy_code:
        result["busy_code"] = outcome.busy_code
    if summary.failures:
        result["failures"] = summary.failures
    logger.info("run finished", extra={"summary": result})
    return result
