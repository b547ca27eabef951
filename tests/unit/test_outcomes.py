"""How a run ended, as the "run finished" line, the metrics and the alarms say it."""

from __future__ import annotations

import pytest

from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    MailboxBusy,
    ProtocolError,
    SecretError,
    SessionOutOfStep,
    StoreError,
    TlsError,
)
from pop3_ingest.handlers.outcomes import (
    UNHEALTHY,
    Health,
    Outcome,
    health_of,
    outcome_of_error,
    outcome_of_stop,
)


@pytest.mark.parametrize("stopped", list(StopReason))
def test_every_way_a_run_stops_has_an_outcome(stopped: StopReason) -> None:
    outcome = outcome_of_stop(stopped)
    # Only what really went through counts as completed.
    assert (outcome is Outcome.COMPLETED) == (stopped is StopReason.COMPLETED)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (AuthError("login as 'a' refused"), Outcome.LOGIN_FAILED),
        (MailboxBusy("in use", "IN-USE"), Outcome.BUSY),
        (ConnectError("refused"), Outcome.UNREACHABLE),
        (TlsError("certificate not trusted"), Outcome.UNREACHABLE),
        (SessionOutOfStep("answer out of step"), Outcome.CONNECTION_LOST),
        (ProtocolError("no UIDL"), Outcome.PROTOCOL_ERROR),
        (SecretError("field 'host' missing", "host"), Outcome.MISCONFIGURED),
        (ConfigError("BUCKET_NAME not set"), Outcome.MISCONFIGURED),
        (StoreError("S3 refused"), Outcome.ERROR),
        (RuntimeError("a bug"), Outcome.ERROR),
    ],
)
def test_a_run_that_raises_has_the_outcome_of_its_error(error: Exception, outcome: Outcome) -> None:
    assert outcome_of_error(error) is outcome


def test_a_failed_run_is_failing_and_a_busy_or_skipped_one_is_not() -> None:
    for error in (AuthError("x"), ConnectError("x"), SecretError("x"), RuntimeError("x")):
        assert health_of(outcome_of_error(error)) is Health.FAILING
    assert health_of(outcome_of_stop(StopReason.AUTH_SUSPENDED)) is Health.FAILING
    for fine in (StopReason.COMPLETED, StopReason.BUSY, StopReason.NOT_DUE, StopReason.DEADLINE):
        assert health_of(outcome_of_stop(fine), RunSummary("m", stopped=fine)) is Health.OK


@pytest.mark.parametrize("held", ["oversized", "in_quarantine", "quarantined"])
def test_mail_waiting_for_an_operator_needs_attention(held: str) -> None:
    summary = RunSummary("m")
    setattr(summary, held, 1)
    assert health_of(Outcome.COMPLETED, summary) is Health.ATTENTION
    assert Health.ATTENTION in UNHEALTHY
    assert Health.OK not in UNHEALTHY


def test_each_outcome_has_its_own_runs_metric() -> None:
    names = [outcome.metric for outcome in Outcome]
    assert len(set(names)) == len(names)
    assert Outcome.LOGIN_FAILED.metric == "RunsLoginFailed"
    assert all(name.startswith("Runs") and name.isalnum() for name in names)
