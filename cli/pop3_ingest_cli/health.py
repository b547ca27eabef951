"""What a mailbox's run state says about its health: pure, from the state and the clock.

A mailbox is **unhealthy** when an operator should act:

- its logins are suspended (``AUTH_FAILURE_LIMIT`` failures in a row);
- it is backing off because the server was busy or could not be reached
  (a pause the server asked for between logins, ``LOGIN-DELAY``, is normal);
- no run completed for longer than the stale limit, or none ever did;
- messages are quarantined;
- its state document is damaged, or (Mode fleet) its secret is unusable.

Everything else it shows (the last error, pending messages, a run holding the
lease) is information. Mode fleet writes a state only when it changed, or
every ``REWRITE_AFTER_SECONDS`` when nothing did, so there a state's
``last_completed`` may be that much older than the last run: the stale limit
grows by as much (:func:`stale_limit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pop3_ingest.config import DEFAULT_AUTH_FAILURE_LIMIT
from pop3_ingest.domain.state import REWRITE_AFTER_SECONDS, MailboxState

# The template's StaleAfterHours default: a mailbox with no completed run for
# this long is stale (tests/unit/cli check that the two agree).
DEFAULT_STALE_AFTER_HOURS = 3.0
_HOUR = 3600.0

OK, UNHEALTHY, UNREADABLE, NOT_POLLED = "ok", "unhealthy", "unreadable", "not polled"


def stale_limit(stale_after_hours: float, *, fleet: bool) -> float:
    """Seconds without a completed run (as the state records it) before a mailbox is stale."""
    return stale_after_hours * _HOUR + (REWRITE_AFTER_SECONDS if fleet else 0.0)


@dataclass(frozen=True)
class Rules:
    """What the health is judged against."""

    now: float
    stale_seconds: float
    auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT


@dataclass
class MailboxHealth:
    """One mailbox's row of ``status``."""

    mailbox: str
    health: str = OK
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    secret: str | None = None
    completed_at: float = 0.0  # epoch seconds of the last completed run (0: none)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        if self.health == OK:
            self.health = UNHEALTHY

    def document(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "secret": self.secret,
            "health": self.health,
            "problems": self.problems,
            "notes": self.notes,
            **self.facts,
        }


def iso(seconds: float) -> str | None:
    """Epoch seconds as ``2026-11-26T12:00:00Z``; None for 0 (never)."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(seconds: float) -> str:
    """``42 s``, ``17 min``, ``5 h 3 min``, ``3 d 4 h``."""
    seconds = max(0, int(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds} s"
    if minutes < 60:
        return f"{minutes} min"
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _facts(state: MailboxState, rules: Rules) -> dict[str, Any]:
    # last_error, last_error_at and pending are newer fields: a state written
    # by an older function has none of them.
    last_error: str = getattr(state, "last_error", "") or ""
    last_error_at: float = getattr(state, "last_error_at", 0.0) or 0.0
    pending: int | None = getattr(state, "pending", None)
    backing_off = state.backoff_until > rules.now
    return {
        "last_completed": iso(state.last_completed),
        "last_attempt": iso(state.last_attempt),
        "last_error": last_error or None,
        "last_error_at": iso(last_error_at),
        "suspended": 0 < rules.auth_failure_limit <= state.auth_failures,
        "auth_failures": state.auth_failures,
        "backing_off": backing_off,
        "backoff_until": iso(state.backoff_until) if backing_off else None,
        "backoff_reason": _backoff_reason(state) if backing_off else None,
        "running": state.lease_holder(rules.now) is not None,
        "quarantined": len(state.quarantined),
        "pending": pending,
    }


def _backoff_reason(state: MailboxState) -> str:
    if state.unreachable_streak:
        return "unreachable"
    if state.busy_streak:
        return "busy"
    return "login delay"


def judge(
    mailbox: str, state: MailboxState, rules: Rules, *, fingerprint: str | None = None
) -> MailboxHealth:
    """The health of a mailbox whose state was read.

    ``fingerprint``: the mailbox secret's as it is now, when it was read. A
    suspension counts against the secret that failed: once the secret
    changed, the next run logs in with the new one.
    """
    health = MailboxHealth(mailbox, facts=_facts(state, rules), completed_at=state.last_completed)
    facts = health.facts
    if facts["suspended"] and fingerprint not in (None, state.auth_fingerprint):
        facts["suspended"] = False
        health.notes.append(
            "logins were suspended, but the secret changed since: the next run logs in with it"
        )
    if facts["suspended"]:
        health.problem(
            f"logins suspended after {state.auth_failures} failures: fix the secret, or "
            f"'pop3-ingest resume --mailbox {mailbox}' once the provider lets it in"
        )
    if facts["backing_off"]:
        text = f"backing off until {facts['backoff_until']} ({facts['backoff_reason']})"
        if facts["backoff_reason"] == "login delay":
            health.notes.append(text)  # the server's own pace between logins
        else:
            health.problem(text)
    _judge_staleness(health, state, rules)
    if state.quarantined:
        health.problem(
            f"{len(state.quarantined)} message(s) quarantined: "
            f"'pop3-ingest quarantine list --mailbox {mailbox}'"
        )
    if facts["running"]:
        health.notes.append("a run holds the mailbox now")
    return health


def _judge_staleness(health: MailboxHealth, state: MailboxState, rules: Rules) -> None:
    if not state.last_completed:
        health.problem("no run has completed yet")
        return
    quiet = rules.now - state.last_completed
    if quiet > rules.stale_seconds:
        health.problem(
            f"stale: last completed run {ago(quiet)} ago (limit {ago(rules.stale_seconds)})"
        )


def damaged(mailbox: str, reason: str) -> MailboxHealth:
    health = MailboxHealth(mailbox)
    health.problem(f"run state damaged ({reason}): the next run sets it aside and starts afresh")
    return health


def unreadable(mailbox: str, reason: str) -> MailboxHealth:
    health = MailboxHealth(mailbox, health=UNREADABLE)
    health.problems.append(f"run state could not be read: {reason}")
    return health


def never_ran(mailbox: str, secret: str) -> MailboxHealth:
    health = MailboxHealth(mailbox, secret=secret)
    health.problem("no run state yet: the mailbox has not run")
    return health


def unusable_secret(secret: str, reason: str) -> MailboxHealth:
    health = MailboxHealth(f"(secret {secret})", secret=secret)
    health.problem(f"the mailbox secret is unusable: {reason}")
    return health


def untagged(health: MailboxHealth) -> MailboxHealth:
    """A state no tagged secret names (Mode fleet): a mailbox removed; not polled any more."""
    health.notes = [*health.problems, *health.notes]
    health.problems = []
    health.health = NOT_POLLED
    health.notes.insert(0, "no tagged secret names this mailbox: it is not polled")
    return health
