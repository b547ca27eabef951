"""The run policy for one mailbox: whether to log in at all, and what a run leaves behind.

Before the core (the session engine) starts, a run checks whether it should:
another run may hold the mailbox's lease, login failures with an unchanged
secret may have suspended it, the server may have asked for a pause, or the
mailbox is not due yet. After the core, it remembers what happened: login
failures counted against the secret's fingerprint, a growing back-off while
the server is busy, the pause the server wants between logins. The last save
gives the lease back.

The order is fixed: state read, lease, core, save. Where the trigger already
keeps a mailbox's runs apart (Mode fleet: the jobs' FIFO message group), no
lease is written, and the last save is made only when the run changed what
the mailbox remembers: a run with nothing new reads the state and writes
nothing. The world is reached through ports only (the state store, the
secret read again, the core, a clock, an observer for metrics and log lines),
so in-memory fakes can stand in for all of it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

from pop3_ingest import redaction
from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.ports import Core, RunObserver, SnapshotT, StateStore
from pop3_ingest.domain.state import (
    LAST_ERROR_CHARS,
    LEASE_MARGIN_SECONDS,
    LEASE_OWNER,
    Failure,
    MailboxState,
)
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    Pop3Error,
    Pop3IngestError,
    TlsError,
)

QuarantineWriter = Callable[[ServerMessage, Failure], None]
# The core for one attempt: the login settings, the state it works on (the
# policy saves it afterwards), and where its quarantine records go.
CoreFactory = Callable[[MailboxConfig, MailboxState, QuarantineWriter], Core]

# A mailbox counts as due this long before its interval is up, so a schedule
# whose ticks come a little early does not skip every other one.
_DUE_EARLY_SECONDS = 30

# What a run of a mailbox whose secret is still the template's placeholder logs.
NOT_CONFIGURED_HINT = (
    "mailbox secret not configured yet: its host is the template's placeholder (under "
    ".invalid), so nothing is polled. Write the mailbox's settings into the secret "
    "(aws secretsmanager put-secret-value --secret-id <the stack's SecretArn output> "
    "--secret-string file://mailbox.json; docs/configuration.md), after trying them with "
    "pop3-ingest check --secret-file mailbox.json"
)

# Failures of the session after login: each is counted and logged, then the
# state is saved and the error raised again. The first entry that matches wins.
_SESSION_FAILURES: tuple[tuple[tuple[type[Pop3Error], ...], str, str], ...] = (
    ((TlsError, ConnectError), "ConnectFailed", "cannot reach the mailbox safely"),
    # Lost before or while listing: nothing was deleted.
    ((ConnectionLost,), "ConnectionLost", "connection lost"),
    # UIDL or LIST refused, for one.
    ((Pop3Error,), "ProtocolError", "POP3 server answered what the run cannot use"),
)

# Runs that stopped early for a reason that is an error (the last error, for status).
_FAILED_STOPS = {
    StopReason.QUEUE_UNAVAILABLE: "the pointer queue was unavailable",
    StopReason.CONNECTION_LOST: "the connection was lost during the run",
    StopReason.REPEATED_FAILURES: "sessions kept ending without QUIT",
}


@dataclass(frozen=True)
class RunPorts(Generic[SnapshotT]):
    """Everything a run reaches outside itself."""

    states: StateStore[SnapshotT]
    # The mailbox's secret read again past any cache: has it been rotated?
    reload_secret: Callable[[], MailboxConfig]
    start_core: CoreFactory
    observer: RunObserver
    # Seconds this invocation may still run: no lease is held longer.
    seconds_left: Callable[[], float]
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class RunOutcome:
    summary: RunSummary
    busy_code: str | None = None  # the server's response code, when it was busy


def run_mailbox(
    config: MailboxConfig,
    ports: RunPorts[SnapshotT],
    *,
    owner: str,
    auth_failure_limit: int,
    take_lease: bool = True,
    paced_by_schedule: bool = False,
) -> RunOutcome:
    """One run for one mailbox, and one more if its secret was rotated under the cache.

    ``owner`` holds the lease for this run (see :func:`lease_owner`). A login
    refused, or suspended, with the cached secret is tried once more when the
    secret read again differs: a rotation is picked up at once, not after the
    cache expires.

    ``take_lease=False`` where the trigger already runs one job per mailbox at a
    time (a FIFO message group): no lease is written (a live one found is still
    honoured), and the state is written only when it changed (``_save``).

    A secret that is still the template's placeholder (``config.configured``
    false, read again past the cache) is "not configured yet": logged once at
    INFO with how to configure it, nothing read, no login, no error.

    ``paced_by_schedule`` where the mailbox's own schedule fires at its
    ``interval_minutes`` (Mode fleet): the schedule paces it, so no tick is
    skipped as "not due" (a flexible window may bring two ticks closer than
    the interval).
    """
    policy = _RunPolicy(ports, owner, auth_failure_limit, take_lease, paced_by_schedule)
    if not config.configured:
        # The cached secret may predate the operator's edit: read it again first.
        config = ports.reload_secret()
        if not config.configured:
            return policy.not_configured(config)
    try:
        outcome = policy.attempt(config)
    except AuthError:
        fresh = policy.rotated(config)
        if fresh is None:
            raise
        return policy.attempt(fresh)
    if outcome.summary.stopped is StopReason.AUTH_SUSPENDED:
        fresh = policy.rotated(config)
        if fresh is not None:
            return policy.attempt(fresh)
    return outcome


def lease_owner(request_id: object) -> str:
    """The invocation's request id, so a retry inside one invocation keeps the lease;
    a random one when there is none usable."""
    if isinstance(request_id, str) and LEASE_OWNER.fullmatch(request_id):
        return request_id
    return uuid.uuid4().hex


def busy_backoff(code: str, streak: int) -> float:
    """Seconds to wait after the ``streak``-th busy answer in a row: doubling, capped."""
    # In use: another client is draining it, try again soon. Temporary
    # failures and login delays: back off harder, up to an hour.
    base, cap = (30.0, 600.0) if code == "IN-USE" else (120.0, 3600.0)
    return float(min(cap, base * 2 ** (streak - 1)))


def unreachable_backoff(streak: int) -> float:
    """Seconds to wait after the ``streak``-th run in a row that could not connect.

    One failure is a blip: the next tick tries again. From the second in a row
    the wait doubles from a minute, capped at an hour, so a dead host costs a
    connect timeout a few times an hour rather than at every tick.
    """
    if streak < 2:
        return 0.0
    return float(min(3600.0, 60.0 * 2 ** (streak - 2)))


def pending_after(summary: RunSummary, state: MailboxState) -> int:
    """Messages left on the server for a later run when ``summary``'s run stopped.

    None after a run that completed. After one that stopped early (deadline,
    message cap, ...): what its first listing held, less what it deleted, what
    is left alone on purpose (quarantined, oversized, unlisted) and what the
    state remembers as taken or left alone (announced, the baseline). Exact for
    a complete listing of unique UIDLs; else an estimate.
    """
    if summary.stopped is StopReason.COMPLETED:
        return 0
    left_alone = summary.in_quarantine + summary.oversized + summary.unlisted
    remembered = len(state.seen) + len(state.baseline)
    return max(0, summary.left_on_server - left_alone - remembered)


def _note_for_status(
    summary: RunSummary, state: MailboxState, config: MailboxConfig, now: float
) -> None:
    """What ``pop3-ingest status`` shows of a run that ended normally."""
    state.pending = pending_after(summary, state)
    what, detail = _problem(summary)
    if what:
        _remember_error(state, config, (what, detail), now)


def _remember_error(
    state: MailboxState, config: MailboxConfig, error: tuple[str, str], now: float
) -> None:
    """The mailbox's last error, for ``pop3-ingest status``: short and dated, its
    remote text (``error``'s second part) redacted; our own words as they are."""
    what, detail = error
    if detail:
        what += ": " + redaction.Redactor(config.secret_values()).mask(detail, LAST_ERROR_CHARS)
    state.last_error = what[:LAST_ERROR_CHARS]
    state.last_error_at = now


def _describe(exc: Exception) -> tuple[str, str]:
    """A run's failure: what it means in a few words, and its own text."""
    if isinstance(exc, AuthError):
        what = "login failed"
    else:
        kinds = (message for kind, _, message in _SESSION_FAILURES if isinstance(exc, kind))
        what = next(kinds, type(exc).__name__)
    return what, str(exc)


def _problem(summary: RunSummary) -> tuple[str, str]:
    """What went wrong in a run that ended normally, and the last message failure's
    text; empty when nothing did."""
    parts = []
    if summary.stopped in _FAILED_STOPS:
        parts.append(_FAILED_STOPS[summary.stopped])
    if summary.failures:
        parts.append(f"{summary.failed} message(s) failed, the last")
    return "; ".join(parts), summary.failures[-1]["error"] if summary.failures else ""


def quarantine_record(mailbox: str, message: ServerMessage, failure: Failure) -> dict[str, Any]:
    """What an operator reads about a message the run stopped trying."""
    return {
        "mailbox": mailbox,
        "uidl": message.uidl,
        "size": message.size,
        "failures": failure.count,
        "error": failure.error,
        "first_failed_at": failure.first_at,
        "quarantined_at": failure.last_at,
        "policy": "left on the server; not retried until released",
    }


@dataclass
class _RunPolicy(Generic[SnapshotT]):
    """One attempt at a mailbox: decide, lease, run the core, remember, give back."""

    ports: RunPorts[SnapshotT]
    owner: str
    auth_failure_limit: int
    take_lease: bool
    paced_by_schedule: bool

    def attempt(self, config: MailboxConfig) -> RunOutcome:
        states, mailbox, now = self.ports.states, config.mailbox, self.ports.clock()
        current = states.read(mailbox)
        skip = self._reason_not_to_start(current.state, config, now)
        if skip is not None:
            return RunOutcome(RunSummary(mailbox=mailbox, stopped=skip))
        lease = self._claim(mailbox, current, now)
        if lease is None:
            self._signal(
                "MailboxLocked",
                logging.WARNING,
                "another run took this mailbox's lease first; not starting a second one",
            )
            return RunOutcome(RunSummary(mailbox=mailbox, stopped=StopReason.LOCKED))
        state = lease.state.copy()
        state.last_attempt = now
        core = self.ports.start_core(config, state, self._quarantine_writer(mailbox))
        try:
            summary = core.run()
        except MailboxBusy as exc:
            self._back_off(state, exc, now)
            self._save(mailbox, state, lease)
            return RunOutcome(RunSummary(mailbox=mailbox, stopped=StopReason.BUSY), exc.code)
        except Exception as exc:
            # Whatever broke, the next run must not wait for the lease to
            # expire, and the deletions committed so far are remembered.
            self._note_failure(exc, state, config)
            self._save(mailbox, state, lease)
            raise
        self._note_success(summary, core.login_delay, state, config, now)
        self._save(mailbox, state, lease)
        return RunOutcome(summary)

    def not_configured(self, config: MailboxConfig) -> RunOutcome:
        """The secret is still a placeholder: no state read, no login, not an error."""
        self._signal(None, logging.INFO, NOT_CONFIGURED_HINT, host=config.host)
        return RunOutcome(RunSummary(mailbox=config.mailbox, stopped=StopReason.NOT_CONFIGURED))

    def _claim(self, mailbox: str, current: SnapshotT, now: float) -> SnapshotT | None:
        """What the run works from: the state with this run's lease in it, None when
        another run took the lease first; the state as read when no lease is taken."""
        if not self.take_lease:
            return current
        # Held to the end of this invocation at the latest: a run that dies
        # without giving it back blocks the mailbox no longer than it could run.
        until = now + self.ports.seconds_left() + LEASE_MARGIN_SECONDS
        return self.ports.states.take_lease(mailbox, self.owner, until, now, current)

    def rotated(self, config: MailboxConfig) -> MailboxConfig | None:
        """The secret read again past the cache, if it changed since (a rotation)."""
        fresh = self.ports.reload_secret()
        if fresh.fingerprint() == config.fingerprint():
            return None
        self._signal(
            None,
            logging.INFO,
            "the secret changed since it was cached; logging in with the new one",
        )
        return fresh

    def _reason_not_to_start(
        self, state: MailboxState, config: MailboxConfig, now: float
    ) -> StopReason | None:
        """Reasons not to log in at all this time; each is logged."""
        holder = state.lease_holder(now)
        if holder is not None and holder != self.owner:
            self._signal(
                "MailboxLocked",
                logging.WARNING,
                "another run is working this mailbox; not starting a second one",
                lease_owner=holder,
                lease_until=state.lease_until,
            )
            return StopReason.LOCKED
        if (
            state.auth_failures >= self.auth_failure_limit
            and state.auth_fingerprint == config.fingerprint()
        ):
            self._signal(
                "LoginSuspended",
                logging.ERROR,
                "login suspended after repeated failures; update the secret to resume",
                consecutive_failures=state.auth_failures,
            )
            return StopReason.AUTH_SUSPENDED
        if now < state.backoff_until:
            why = "could not be reached" if state.unreachable_streak else "asked for a pause"
            self._signal(
                None, logging.INFO, f"backing off: the server {why}", until=state.backoff_until
            )
            return StopReason.BACKOFF
        interval = 0 if self.paced_by_schedule else config.interval_minutes * 60
        if interval and now < state.last_attempt + interval - _DUE_EARLY_SECONDS:
            self._signal(
                None, logging.INFO, "not due yet", interval_minutes=config.interval_minutes
            )
            return StopReason.NOT_DUE
        return None

    def _back_off(self, state: MailboxState, busy: MailboxBusy, now: float) -> None:
        state.unreachable_streak = 0
        state.busy_streak += 1
        state.backoff_until = now + busy_backoff(busy.code, state.busy_streak)
        fields = {"code": busy.code, "error": str(busy), "retry_after": state.backoff_until}
        self._signal("MailboxBusy", logging.WARNING, "mailbox busy; backing off", **fields)

    def _note_failure(self, exc: Exception, state: MailboxState, config: MailboxConfig) -> None:
        self._note_reachable(exc, state)
        _remember_error(state, config, _describe(exc), self.ports.clock())
        if isinstance(exc, AuthError):
            # Failures count against one secret: a changed one starts again at zero.
            if state.auth_fingerprint != config.fingerprint():
                state.auth_failures = 0
            state.auth_failures += 1
            state.auth_fingerprint = config.fingerprint()
            fields = {"code": exc.code, "error": str(exc), "consecutive": state.auth_failures}
            self._signal("LoginFailed", logging.ERROR, "login failed", **fields)
            return
        for kinds, metric, message in _SESSION_FAILURES:
            if isinstance(exc, kinds):
                self._signal(metric, logging.ERROR, message, error=str(exc))
                return

    def _note_reachable(self, exc: Exception, state: MailboxState) -> None:
        """A host that keeps failing to connect is tried less and less often."""
        if not isinstance(exc, ConnectError):
            state.unreachable_streak = 0
            return
        state.unreachable_streak += 1
        wait = unreachable_backoff(state.unreachable_streak)
        if wait:
            state.backoff_until = max(state.backoff_until, self.ports.clock() + wait)

    def _note_success(
        self,
        summary: RunSummary,
        login_delay: int,
        state: MailboxState,
        config: MailboxConfig,
        now: float,
    ) -> None:
        state.auth_failures = 0
        state.auth_fingerprint = config.fingerprint()
        state.unreachable_streak = 0
        if summary.stopped is not StopReason.BUSY:
            state.busy_streak = 0
        if login_delay:
            # RFC 2449: the server asked for this much time between logins.
            state.backoff_until = now + login_delay
        if summary.stopped is StopReason.COMPLETED:
            state.last_completed = self.ports.clock()
        _note_for_status(summary, state, config, self.ports.clock())

    def _save(self, mailbox: str, state: MailboxState, base: SnapshotT) -> None:
        """The run's last write: conditional, merged if another writer came first, and
        giving the lease back. Skipped with an error when it could overrun the deadline.

        Without a lease, nothing to give back: the state is written only when it is
        worth it (``MailboxState.worth_saving_over``: the run times alone are not
        worth an S3 PUT per run), or when the document read was damaged (so it is
        not set aside again next time).
        """
        if self.take_lease:
            state.lease_owner = None
            state.lease_until = 0.0
        elif base.damaged is None and not state.worth_saving_over(base.state):
            return
        try:
            self.ports.states.write(mailbox, state, base)
        except Pop3IngestError as exc:
            # Mail is safe either way; losing the memory costs repeats, not messages.
            self._signal("StateNotSaved", logging.ERROR, "run state not saved", error=str(exc))

    def _signal(self, metric: str | None, level: int, message: str, **fields: object) -> None:
        """A log line, and one more of ``metric`` when the event is counted.

        The policy's only call of ``observer.log`` (see RunObserver)."""
        if metric is not None:
            self.ports.observer.count(metric)
        self.ports.observer.log(level, message, **fields)

    def _quarantine_writer(self, mailbox: str) -> QuarantineWriter:
        states = self.ports.states

        def write(message: ServerMessage, failure: Failure) -> None:
            record = quarantine_record(mailbox, message, failure)
            states.put_quarantine_record(mailbox, failure_key(message), record)

        return write
