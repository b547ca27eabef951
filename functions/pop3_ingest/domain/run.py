"""The run policy for one mailbox: whether to log in at all, and what a run leaves behind.

Before the core (the session engine) starts, a run checks whether it should:
another run may hold the mailbox's lease, login failures with an unchanged
secret may have suspended it, the server may have asked for a pause, or the
mailbox is not due yet. After the core, it remembers what happened: login
failures counted against the secret's fingerprint, a growing back-off while
the server is busy, the pause the server wants between logins. The last save
gives the lease back.

The order is fixed: state read, lease, core, save. The world is reached
through ports only (the state store, the secret read again, the core, a
clock, an observer for metrics and log lines), so in-memory fakes can stand
in for all of it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.ports import Core, RunObserver, SnapshotT, StateStore
from pop3_ingest.domain.state import LEASE_MARGIN_SECONDS, LEASE_OWNER, Failure, MailboxState
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

# Failures of the session after login: each is counted and logged, then the
# state is saved and the error raised again. The first entry that matches wins.
_SESSION_FAILURES: tuple[tuple[tuple[type[Pop3Error], ...], str, str], ...] = (
    ((TlsError, ConnectError), "ConnectFailed", "cannot reach the mailbox safely"),
    # Lost before or while listing: nothing was deleted.
    ((ConnectionLost,), "ConnectionLost", "connection lost"),
    # UIDL or LIST refused, for one.
    ((Pop3Error,), "ProtocolError", "POP3 server answered what the run cannot use"),
)


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
    config: MailboxConfig, ports: RunPorts[SnapshotT], *, owner: str, auth_failure_limit: int
) -> RunOutcome:
    """One run for one mailbox, and one more if its secret was rotated under the cache.

    ``owner`` holds the lease for this run (see :func:`lease_owner`). A login
    refused, or suspended, with the cached secret is tried once more when the
    secret read again differs: a rotation is picked up at once, not after the
    cache expires.
    """
    policy = _RunPolicy(ports, owner, auth_failure_limit)
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


class _RunPolicy(Generic[SnapshotT]):
    """One attempt at a mailbox: decide, lease, run the core, remember, give back."""

    def __init__(self, ports: RunPorts[SnapshotT], owner: str, auth_failure_limit: int) -> None:
        self.ports = ports
        self.owner = owner
        self.auth_failure_limit = auth_failure_limit

    def attempt(self, config: MailboxConfig) -> RunOutcome:
        states, mailbox, now = self.ports.states, config.mailbox, self.ports.clock()
        current = states.read(mailbox)
        skip = self._reason_not_to_start(current.state, config, now)
        if skip is not None:
            return RunOutcome(RunSummary(mailbox=mailbox, stopped=skip))
        # Held to the end of this invocation at the latest: a run that dies
        # without giving it back blocks the mailbox no longer than it could run.
        until = now + self.ports.seconds_left() + LEASE_MARGIN_SECONDS
        lease = states.take_lease(mailbox, self.owner, until, now, current)
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
            self._give_back(mailbox, state, lease)
            return RunOutcome(RunSummary(mailbox=mailbox, stopped=StopReason.BUSY), exc.code)
        except Exception as exc:
            # Whatever broke, the next run must not wait for the lease to
            # expire, and the deletions committed so far are remembered.
            self._note_failure(exc, state, config)
            self._give_back(mailbox, state, lease)
            raise
        self._note_success(summary, core.login_delay, state, config, now)
        self._give_back(mailbox, state, lease)
        return RunOutcome(summary)

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
            self._signal(
                None, logging.INFO, "backing off as the server asked", until=state.backoff_until
            )
            return StopReason.BACKOFF
        interval = config.interval_minutes * 60
        if interval and now < state.last_attempt + interval - _DUE_EARLY_SECONDS:
            self._signal(
                None, logging.INFO, "not due yet", interval_minutes=config.interval_minutes
            )
            return StopReason.NOT_DUE
        return None

    def _back_off(self, state: MailboxState, busy: MailboxBusy, now: float) -> None:
        state.busy_streak += 1
        state.backoff_until = now + busy_backoff(busy.code, state.busy_streak)
        fields = {"code": busy.code, "error": str(busy), "retry_after": state.backoff_until}
        self._signal("MailboxBusy", logging.WARNING, "mailbox busy; backing off", **fields)

    def _note_failure(self, exc: Exception, state: MailboxState, config: MailboxConfig) -> None:
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
        if summary.stopped is not StopReason.BUSY:
            state.busy_streak = 0
        if login_delay:
            # RFC 2449: the server asked for this much time between logins.
            state.backoff_until = now + login_delay
        if summary.stopped is StopReason.COMPLETED:
            state.last_completed = self.ports.clock()

    def _give_back(self, mailbox: str, state: MailboxState, lease: SnapshotT) -> None:
        """The run's last write: conditional, merged if another writer came first, and
        giving the lease back. Skipped with an error when it could overrun the deadline."""
        state.lease_owner = None
        state.lease_until = 0.0
        try:
            self.ports.states.write(mailbox, state, lease)
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
