"""What the sessions of one run share: what the run took, and the failure policy.

A run drains a mailbox in one or more sessions (a commit every so many
messages, a reconnect after a lost line). This ledger is what they hand on to
each other, so a later session neither takes a message again nor tries a
blocked one in a loop.

The rule enforced here (README "Never losing mail"):

- **Failures are the message's.** Any failure while a message is downloaded
  or stored counts against it; after ``poison_threshold`` runs in a row it is
  quarantined (and ``on_quarantine`` told) and the mailbox moves on. A failure
  that is not the message's fault (the queue down, the run's own cut-off) is
  reported but not counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.state import MAX_ERROR_CHARS, Failure, MailboxState
from pop3_ingest.domain.summary import RunSummary
from pop3_ingest.errors import Pop3IngestError

logger = logging.getLogger(__name__)

# After this many pointer batches in a row fail, the queue is down, not a message.
_QUEUE_FAILURE_LIMIT = 2
# The summary lists at most this many failures (the count covers them all).
_FAILURES_KEPT = 20

QuarantineHook = Callable[[ServerMessage, Failure], None]


@dataclass(frozen=True)
class RunSoFar:
    """What earlier sessions of this run did, as the next session's plan reads it."""

    # Unique UIDLs the run is done with, whatever the outcome.
    handled: frozenset[str] = frozenset()
    # Unique UIDLs downloaded to prove an earlier store (once each per run).
    reproved: frozenset[str] = frozenset()
    # Messages without a unique UIDL taken so far, counted by failure_key.
    shared_taken: Mapping[str, int] = field(default_factory=dict)
    # Failure keys quarantined by this run, and those given their one more try.
    quarantined_now: frozenset[str] = frozenset()
    retried: frozenset[str] = frozenset()


class RunLedger:
    """The run-wide bookkeeping every session of a run shares, and ``fail()``."""

    def __init__(
        self,
        summary: RunSummary,
        state: MailboxState,
        poison_threshold: int,
        on_quarantine: QuarantineHook | None = None,
    ) -> None:
        self.summary = summary
        self._state = state
        self._poison_threshold = poison_threshold
        self._on_quarantine = on_quarantine
        self._handled: set[str] = set()
        self._reproved: set[str] = set()
        # A later session of the run does not take as many of these again.
        self._shared_taken: Counter[str] = Counter()
        # A blocked window is retried once per run, never in a loop.
        self._quarantined_now: set[str] = set()
        self._retried: set[str] = set()
        self._taken = 0
        self._queue_failures = 0

    # -- what the run took ------------------------------------------------------

    @property
    def taken(self) -> int:
        """Messages this run sent a RETR for (the ``max_messages`` cap counts these)."""
        return self._taken

    def so_far(self) -> RunSoFar:
        return RunSoFar(
            handled=frozenset(self._handled),
            reproved=frozenset(self._reproved),
            shared_taken=Counter(self._shared_taken),
            quarantined_now=frozenset(self._quarantined_now),
            retried=frozenset(self._retried),
        )

    def remember(
        self, *, handled: Iterable[str], reproved: Iterable[str], retried: Iterable[str]
    ) -> None:
        """A session's plan settled these: later sessions of the run go by them."""
        self._handled.update(handled)
        self._reproved.update(reproved)
        self._retried.update(retried)

    def take(self, message: ServerMessage) -> None:
        """A RETR goes out for ``message``: later sessions of this run do not take it again."""
        if message.unique:
            self._handled.add(message.uidl)
        else:
            self._shared_taken[failure_key(message)] += 1
        self._taken += 1

    def give_back(self, message: ServerMessage) -> None:
        """Its RETR was never answered (the line was lost): a later session takes it after all."""
        if message.unique:
            self._handled.discard(message.uidl)
        else:
            self._shared_taken[failure_key(message)] -= 1

    # -- the queue ----------------------------------------------------------------

    def queue_failed(self) -> None:
        self._queue_failures += 1

    def queue_answered(self) -> None:
        self._queue_failures = 0

    @property
    def queue_down(self) -> bool:
        return self._queue_failures >= _QUEUE_FAILURE_LIMIT

    # -- the failure policy ---------------------------------------------------------

    def fail(self, message: ServerMessage, reason: str, *, poison: bool = True) -> None:
        """One message failed: it stays on the server; repeated failures quarantine it.

        ``poison=False``: not the message's fault, so not counted against it.
        """
        summary = self.summary
        summary.failed += 1
        if len(summary.failures) < _FAILURES_KEPT:
            summary.failures.append({"uidl": message.uidl[:80], "error": reason[:300]})
        logger.error(
            "message left on server",
            extra={"message_number": message.number, "size": message.size, "error": reason},
        )
        if poison:
            self._count_against(message, reason)

    def _count_against(self, message: ServerMessage, reason: str) -> None:
        key = failure_key(message)
        held = self._state.quarantined.get(key)
        if held is not None:
            # A quarantined message tried again (a blocked window) and failed
            # again: it stays quarantined, with its count brought up to date.
            held.count += 1
            held.error = reason[:MAX_ERROR_CHARS]
            held.last_at = time.time()
            return
        if self._state.record_failure(key, reason, self._poison_threshold, time.time()):
            self._quarantined(message, key)

    def _quarantined(self, message: ServerMessage, key: str) -> None:
        self._quarantined_now.add(key)
        self.summary.quarantined += 1
        failure = self._state.quarantined[key]
        logger.error(
            "message quarantined after repeated failures; left on server",
            extra={"message_number": message.number, "failures": failure.count},
        )
        if self._on_quarantine is not None:
            try:
                self._on_quarantine(message, failure)
            except Pop3IngestError as exc:
                logger.error("quarantine record not written", extra={"error": str(exc)})
