"""Planning a session: the listing weighed against the state. Pure: it changes nothing.

The listing, the state, the options and what this run already did go in; out
comes what to fetch (in order), which UIDLs must be proven by digest, what is
skipped and why, and the edits for the caller to apply (to the state and to
the run's ledger).

The rules enforced here (README "Never losing mail"):

- **Proof before DELE, once per run.** A message stored and announced before
  (remembered in ``seen``), or whose deletion was committed before yet is
  listed again (``deleted``, same size), is downloaded again and hashed: only
  bytes equal to what was stored are deleted. Each UIDL is proven once per run.
- **A reused UIDL is new mail.** A remembered UIDL listed with another size
  names another message: it is fetched as new.
- **A capped listing proves nothing gone.** A listing at least
  ``capped_listing`` long may be a provider's partial view (Gmail: about 250):
  memory of messages outside it is kept.
- **A blocked window is retried alone, once per run.** When every message of a
  capped listing is skipped (quarantined, oversized), the mail behind them would
  be hidden for ever; so they are taken anyway, one command at a time.
- **Deletions proven first.** A session with proofs to make (and no
  LOGIN-DELAY) proves and deletes only those, and QUITs, before new mail.
- **Start from now.** With ``start: "now"`` the mailbox's first run takes a
  baseline of its listing (:func:`baseline`): those messages are never
  fetched, proven or deleted, and only mail listed later is taken.
- **Kept N days.** With ``delete_after_days`` a message announced is kept on
  the server until that many days after it was first announced; then it is
  proven by its bytes and deleted like any other.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pop3_ingest.config import Start
from pop3_ingest.domain.ledger import RunSoFar
from pop3_ingest.domain.message import ServerMessage, failure_key, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.state import MailboxState, Seen


class Skip(StrEnum):
    """Why a listed message is not fetched in this session."""

    QUARANTINED = "quarantined"
    OVERSIZED = "oversized"
    TAKEN = "taken earlier in this run"
    PROVEN = "proven earlier in this run"
    KEPT = "kept on the server and announced before"
    BASELINE = 'on the server before start "now"'


_DAY = 24 * 3600


@dataclass(frozen=True)
class FirstLook:
    """What the run's first listing says before anything is planned.

    ``present`` and ``complete`` are the arguments of the state's
    ``forget_absent``: applied before the plan, as the plan reads the memory
    that it tidies.
    """

    messages_on_server: int
    unlisted: int
    present: frozenset[str]
    complete: bool


@dataclass(frozen=True)
class SessionPlan:
    # What to RETR, in order.
    to_fetch: tuple[ServerMessage, ...] = ()
    # UIDL -> the SHA-256 its bytes must hash to for its DELE.
    prove: Mapping[str, str] = field(default_factory=dict)
    # Of those, the UIDLs whose deletion was committed before (listed again).
    reappearing: frozenset[str] = frozenset()
    skipped: tuple[tuple[ServerMessage, Skip], ...] = ()
    # Message numbers of a blocked window, taken anyway: one command at a time.
    retry_alone: frozenset[int] = frozenset()
    # Proofs only, then QUIT: the session is committed and the run goes on.
    prove_only: bool = False
    # This listing's quarantined and oversized messages (whether or not
    # taken anyway): the run's summary counts its first session's.
    quarantined: tuple[ServerMessage, ...] = ()
    oversized: tuple[ServerMessage, ...] = ()
    # Edits for the caller: state.seen entries of reused UIDLs to drop, and
    # what later sessions of this run must know (RunLedger.remember).
    drop_seen: tuple[str, ...] = ()
    handled: frozenset[str] = frozenset()
    reproved: frozenset[str] = frozenset()
    retried: frozenset[str] = frozenset()


def first_look(
    listing: Sequence[ServerMessage], unlisted: int, options: IngestOptions
) -> FirstLook:
    """The counts of the run's first listing, and what it proves gone.

    ``unlisted``: listing entries that cannot be fetched safely (left on the server).
    """
    present = set(listing_keys(listing))  # the UIDL digests, and the baseline's other keys
    present |= {failure_key(m) for m in listing}
    return FirstLook(
        messages_on_server=len(listing) + unlisted,
        unlisted=unlisted,
        present=frozenset(present),
        # A capped listing does not prove that anything left the server.
        complete=len(listing) < options.capped_listing,
    )


def listing_keys(listing: Sequence[ServerMessage]) -> list[str]:
    """What names each listed message before it is downloaded, in listing order.

    A unique UIDL names its message (its digest, as in ``state.seen``). Messages
    without one are told apart by their place among those alike (the same
    ``failure_key``): the first, the second, ... in listing order, which is the
    order they arrived in on the servers we know.
    """
    alike: Counter[str] = Counter()
    keys = []
    for message in listing:
        if message.unique:
            keys.append(uidl_digest(message.uidl))
            continue
        kind = failure_key(message)
        keys.append(uidl_digest(f"\x00occurrence\x00{kind}\x00{alike[kind]}"))
        alike[kind] += 1
    return keys


def baseline(listing: Sequence[ServerMessage], state: MailboxState) -> dict[str, int]:
    """start "now": what the mailbox's first run leaves alone for good (key -> size).

    Every listed message but those the state knows already (announced,
    deleted, quarantined), which keep their own rules.
    """
    entries = {}
    for message, key in zip(listing, listing_keys(listing), strict=True):
        known = message.unique and (key in state.seen or key in state.deleted)
        if not known and failure_key(message) not in state.quarantined:
            entries[key] = message.size
    return entries


def plan_session(
    listing: Sequence[ServerMessage],
    state: MailboxState,
    options: IngestOptions,
    so_far: RunSoFar,
    *,
    login_delay: int = 0,
    now: float | None = None,
) -> SessionPlan:
    """What one session does with its listing. Nothing passed in is changed.

    ``now`` (default: the clock) decides which kept messages are due for deletion.
    """
    planner = _Planner(state, options, so_far, time.time() if now is None else now)
    for message, key in zip(listing, listing_keys(listing), strict=True):
        planner.weigh(message, key)
    if not planner.to_fetch and planner.blocking and len(listing) >= options.capped_listing:
        planner.unblock_window()
    prove_only = bool(planner.prove) and options.delete and not login_delay
    to_fetch = planner.to_fetch
    if prove_only:
        # If the rest of the run is cut off, the proven deletions are
        # committed all the same, so every run progresses. (A server asking
        # for a LOGIN-DELAY gets one session for all.)
        to_fetch = [m for m in to_fetch if m.uidl in planner.prove and m.unique]
    return SessionPlan(
        to_fetch=tuple(to_fetch),
        prove=dict(planner.prove),
        reappearing=frozenset(planner.reappearing),
        skipped=tuple(planner.skipped),
        retry_alone=frozenset(planner.retry_alone),
        prove_only=prove_only,
        quarantined=tuple(planner.quarantined),
        oversized=tuple(planner.oversized),
        drop_seen=tuple(planner.drop_seen),
        handled=frozenset(planner.handled - so_far.handled),
        reproved=frozenset(planner.reproved - so_far.reproved),
        retried=frozenset(planner.retried - so_far.retried),
    )


class _Planner:
    """The working sets of one plan_session call (its own copies: nothing shared is changed)."""

    def __init__(
        self, state: MailboxState, options: IngestOptions, so_far: RunSoFar, now: float
    ) -> None:
        self.state = state
        self.options = options
        self.now = now
        self.baseline = state.baseline if options.start is Start.NOW else {}
        self.quarantined_now = so_far.quarantined_now
        self.handled = set(so_far.handled)
        self.reproved = set(so_far.reproved)
        self.retried = set(so_far.retried)
        self.shared_skip = Counter(so_far.shared_taken)
        self.to_fetch: list[ServerMessage] = []
        self.prove: dict[str, str] = {}
        self.reappearing: set[str] = set()
        self.skipped: list[tuple[ServerMessage, Skip]] = []
        # Skipped here, yet holding a place in the provider's window.
        self.blocking: list[ServerMessage] = []
        self.retry_alone: set[int] = set()
        self.drop_seen: list[str] = []
        self.quarantined: list[ServerMessage] = []
        self.oversized: list[ServerMessage] = []

    def weigh(self, message: ServerMessage, key: str) -> None:
        if self.baseline.get(key) == message.size:
            # Another size under a baseline UIDL is another message: new mail.
            self.skipped.append((message, Skip.BASELINE))
        elif failure_key(message) in self.state.quarantined:
            self.quarantined.append(message)
            self._block(message, Skip.QUARANTINED)
        elif message.unique:
            self._weigh_unique(message)
        else:
            self._weigh_shared(message)

    def _weigh_shared(self, message: ServerMessage) -> None:
        key = failure_key(message)
        if self.shared_skip[key] > 0:
            self.shared_skip[key] -= 1  # taken earlier in this run
            self.skipped.append((message, Skip.TAKEN))
        elif self._too_big(message):
            self._block(message, Skip.OVERSIZED)
        else:
            # No UIDL to remember it by: its digest decides, after download.
            self.to_fetch.append(message)

    def _weigh_unique(self, message: ServerMessage) -> None:
        uidl, digest = message.uidl, uidl_digest(message.uidl)
        gone = self.state.deleted.get(digest)
        if gone is not None and gone.size == message.size:
            # Its deletion was committed before, yet here it is (servers that
            # ignore DELE, or a reused UIDL): hashed, it is the same message
            # (not announced twice, deleted again on that proof) or new mail.
            # Another size is new mail outright.
            self._prove_once(message, gone.sha256, reappearing=True)
            return
        seen = self._seen(digest, message.size)
        if seen is not None and not self._due(seen):
            self.skipped.append((message, Skip.KEPT))
        elif seen is not None and uidl not in self.reproved:
            # Stored and announced before; only the DELE is missing.
            self._prove_once(message, seen.sha256, reappearing=False)
        elif uidl in self.handled:
            self.skipped.append((message, Skip.TAKEN))
        elif self._too_big(message):
            self.handled.add(uidl)
            self._block(message, Skip.OVERSIZED)
        else:
            self.to_fetch.append(message)

    def _seen(self, digest: str, size: int) -> Seen | None:
        seen = None if digest in self.drop_seen else self.state.seen.get(digest)
        if seen is not None and seen.size != size:
            self.drop_seen.append(digest)  # a reused UIDL: the new message it is
            return None
        return seen

    def _due(self, seen: Seen) -> bool:
        """Whether an announced message is to be deleted now (on proof)."""
        days = self.options.delete_after_days
        if not self.options.delete:
            return False
        return not days or self.now - seen.at >= days * _DAY

    def _prove_once(self, message: ServerMessage, sha256: str, *, reappearing: bool) -> None:
        """Downloaded again and hashed, once per run: the proof its DELE needs."""
        if message.uidl in self.reproved:
            self.skipped.append((message, Skip.PROVEN))
            return
        self.reproved.add(message.uidl)
        self.prove[message.uidl] = sha256
        if reappearing:
            self.reappearing.add(message.uidl)
        self.to_fetch.append(message)

    def _too_big(self, message: ServerMessage) -> bool:
        if message.size <= self.options.max_message_size:
            return False
        self.oversized.append(message)
        return True

    def _block(self, message: ServerMessage, reason: Skip) -> None:
        self.blocking.append(message)
        self.skipped.append((message, reason))

    def unblock_window(self) -> None:
        """Every message of a capped listing is skipped: take them anyway, once per run.

        The provider offers the same window each time, so skipping them would
        hide all mail behind them for ever. Oversized ones are taken up to the
        spool budget, quarantined ones for one more try; stored, they leave
        the window. One command at a time, so a first line that reads like a
        status line can be told from an answer out of step by its exact size.
        """
        taken = [
            m
            for m in self.blocking
            if m.size <= self.options.spool_budget
            and failure_key(m) not in self.quarantined_now
            and failure_key(m) not in self.retried
        ]
        self.retried.update(failure_key(m) for m in taken)
        self.retry_alone.update(m.number for m in taken)
        self.handled.update(m.uidl for m in taken if m.unique)
        self.to_fetch.extend(taken)
        numbers = self.retry_alone
        self.skipped = [(m, reason) for m, reason in self.skipped if m.number not in numbers]
