"""Logs, traces and metrics for both functions: the Powertools singletons, in one place.

Also where a run's ending becomes metrics, its one "run finished" line and the
handler's result (:class:`RunReport`), and where the run policy's counts and
log lines go (:class:`PowertoolsObserver`).

Mode single gives every metric the mailbox as a dimension. Mode fleet gives
none: each dimension value is a metric CloudWatch bills, so a fleet publishes
the same few metrics (the service dimension only) at any size, and the mailbox
is found in the "run finished" line (docs/operations.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from pop3_ingest.config import Mode
from pop3_ingest.domain.run import RunOutcome
from pop3_ingest.domain.summary import RunSummary
from pop3_ingest.handlers.outcomes import Outcome, health_of, outcome_of_error, outcome_of_stop

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


# Jobs of one invocation run on threads, and Powertools' metric set is not
# safe to add to from several at once.
_metrics_lock = threading.Lock()


def _add_metric(name: str, value: float, unit: MetricUnit = MetricUnit.Count) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


def count(metric: str) -> None:
    _add_metric(metric, 1)


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


class RunReport:
    """One mailbox run's metrics and its one "run finished" line, however it ends.

    Made by :func:`reporting`, which writes the line for a run that raises; a
    run that returns is reported by :meth:`finished`. The line carries the
    mailbox (the secret id while the secret is unread), ``outcome`` and
    ``health`` (see :mod:`pop3_ingest.handlers.outcomes`) as top-level fields.
    """

    def __init__(self, secret_id: str | None = None) -> None:
        self.secret_id = secret_id
        self.mailbox: str | None = None
        self.mode: Mode | None = None
        self.started = time.monotonic()
        self.done = False

    def identify(self, mailbox: str, mode: Mode) -> None:
        """The secret is read: the mailbox is known, and its metrics' dimensions decided."""
        self.mailbox, self.mode = mailbox, mode
        if mode is Mode.SINGLE:
            metrics.add_dimension(name="mailbox", value=mailbox)
        self.started = time.monotonic()

    def finished(self, outcome: RunOutcome) -> dict[str, Any]:
        """The run returned: its metrics and line; returns the handler's result."""
        summary = outcome.summary
        for name, value, unit in _summary_metrics(summary):
            # A fleet's blob stays small: a count that did not move is left out.
            if value or self.mode is not Mode.FLEET:
                _add_metric(name, value, unit)
        result = _result(summary)
        result["duration_ms"] = self._duration_ms()
        if outcome.busy_code:
            result["busy_code"] = outcome.busy_code
        if summary.failures:
            result["failures"] = summary.failures
        ended = outcome_of_stop(summary.stopped)
        self._finish(ended, health_of(ended, summary).value, summary=result)
        return result

    def failed(self, error: BaseException) -> None:
        """The run raised ``error`` (already logged where it happened): its line."""
        ended = outcome_of_error(error)
        fields = {"error": type(error).__name__, "detail": str(error)}
        self._finish(ended, health_of(ended).value, duration_ms=self._duration_ms(), **fields)

    def _finish(self, outcome: Outcome, health: str, **fields: object) -> None:
        if self.done:
            return
        self.done = True
        count(outcome.metric)
        line: dict[str, object] = {"mailbox": self.mailbox or self.secret_id}
        line |= {"secret_id": self.secret_id, "outcome": outcome.value, "health": health}
        line |= fields
        logger.info("run finished", extra=line)

    def _duration_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


@contextmanager
def reporting(secret_id: str | None = None) -> Iterator[RunReport]:
    """A run's report; an exception out of the run is reported, then raised again."""
    report = RunReport(secret_id)
    try:
        yield report
    except Exception as error:
        report.failed(error)
        raise
