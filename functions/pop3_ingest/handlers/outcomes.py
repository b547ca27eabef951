"""How a run ended, in the words its log line, its metrics and the alarms share.

Every run of a mailbox ends in one :class:`Outcome`, errors included, and has a
:class:`Health`: the "run finished" line carries both as the fields ``outcome``
and ``health``, and the fleet-level metric ``Runs<Outcome>`` (``RunsLoginFailed``)
counts it. The template's Contributor Insights rule counts the mailboxes whose
health is in :data:`UNHEALTHY`, and its dashboard graphs every outcome's metric.

No Powertools and no AWS here, so the template's policy tests can import it.
"""

from __future__ import annotations

from enum import StrEnum

from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    Pop3Error,
    SecretError,
    TlsError,
)


class Outcome(StrEnum):
    COMPLETED = "completed"
    # Stopped with mail left for the next run: deadline, message cap, login delay.
    PARTIAL = "partial"
    # The server asked to come back later ([IN-USE], [SYS/TEMP]): not an error.
    BUSY = "busy"
    # Not started: not due, backing off as the server asked, or another run holds it.
    SKIPPED = "skipped"
    # Not started: logins failed until the secret changes.
    SUSPENDED = "suspended"
    # Not started: the secret is still the template's placeholder (not an error).
    NOT_CONFIGURED = "not_configured"
    LOGIN_FAILED = "login_failed"
    # DNS, refused, timed out, or no safe TLS.
    UNREACHABLE = "unreachable"
    CONNECTION_LOST = "connection_lost"
    PROTOCOL_ERROR = "protocol_error"
    # Session after session ended without QUIT (messages that cannot be stored).
    MESSAGES_FAILING = "messages_failing"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    # The secret or the function's environment is invalid.
    MISCONFIGURED = "misconfigured"
    # Anything else: a bug, or AWS failing past the SDK's retries.
    ERROR = "error"

    @property
    def metric(self) -> str:
        """The fleet-level count of runs that ended so: ``RunsLoginFailed``."""
        return "Runs" + "".join(word.capitalize() for word in self.value.split("_"))


class Health(StrEnum):
    OK = "ok"
    # The run went through, but messages wait for an operator (quarantined, oversized),
    # or the mailbox waits for its settings (not configured yet).
    ATTENTION = "attention"
    # The mailbox takes no mail until something is fixed.
    FAILING = "failing"


# What the "unhealthy mailboxes" alarm counts.
UNHEALTHY = frozenset({Health.ATTENTION, Health.FAILING})

_FAILING = frozenset(Outcome) - {
    Outcome.COMPLETED,
    Outcome.PARTIAL,
    Outcome.BUSY,
    Outcome.SKIPPED,
    Outcome.NOT_CONFIGURED,
}

_BY_STOP_REASON = {
    StopReason.COMPLETED: Outcome.COMPLETED,
    StopReason.DEADLINE: Outcome.PARTIAL,
    StopReason.MESSAGE_CAP: Outcome.PARTIAL,
    StopReason.LOGIN_DELAY: Outcome.PARTIAL,
    StopReason.BUSY: Outcome.BUSY,
    StopReason.BACKOFF: Outcome.SKIPPED,
    StopReason.NOT_DUE: Outcome.SKIPPED,
    StopReason.LOCKED: Outcome.SKIPPED,
    StopReason.AUTH_SUSPENDED: Outcome.SUSPENDED,
    StopReason.CONNECTION_LOST: Outcome.CONNECTION_LOST,
    StopReason.REPEATED_FAILURES: Outcome.MESSAGES_FAILING,
    StopReason.QUEUE_UNAVAILABLE: Outcome.QUEUE_UNAVAILABLE,
    StopReason.NOT_CONFIGURED: Outcome.NOT_CONFIGURED,
}

# The first entry that matches wins: subclasses before their bases.
_BY_ERROR: tuple[tuple[tuple[type[Exception], ...], Outcome], ...] = (
    ((AuthError,), Outcome.LOGIN_FAILED),
    ((MailboxBusy,), Outcome.BUSY),
    ((ConnectError, TlsError), Outcome.UNREACHABLE),
    ((ConnectionLost,), Outcome.CONNECTION_LOST),
    ((Pop3Error,), Outcome.PROTOCOL_ERROR),
    ((ConfigError, SecretError), Outcome.MISCONFIGURED),
)


def outcome_of_stop(stopped: StopReason) -> Outcome:
    """The outcome of a run that returned a summary."""
    return _BY_STOP_REASON[stopped]


def outcome_of_error(error: BaseException) -> Outcome:
    """The outcome of a run that raised ``error``."""
    for kinds, outcome in _BY_ERROR:
        if isinstance(error, kinds):
            return outcome
    return Outcome.ERROR


def health_of(outcome: Outcome, summary: RunSummary | None = None) -> Health:
    """Failing when the run failed; needing attention when mail waits for an operator."""
    if outcome in _FAILING:
        return Health.FAILING
    if outcome is Outcome.NOT_CONFIGURED:
        return Health.ATTENTION
    if summary is not None and (summary.oversized or summary.in_quarantine or summary.quarantined):
        return Health.ATTENTION
    return Health.OK
