"""The core: drain one mailbox under the delete-after-store rule.

Per message: RETR, hash and store the exact bytes, announce a pointer, and
only then DELE; QUIT commits the deletions. To be bounded by the line rather
than by round trips, RETRs are pipelined (RFC 2449) in a bounded window,
uploads run on worker threads while the next message downloads, pointers go
out in SQS batches, and each DELE follows its confirmed message. The session
is committed (QUIT, reconnect) every so many messages, bytes or seconds.

The rules this module keeps (README "Never losing mail"):

- **Proof before DELE.** A message is deleted only when the bytes retrieved
  *in this session* hash to the SHA-256 of an object we stored and announced:
  just stored, or stored before and remembered in the state.
- **No QUIT with anything unconfirmed.** Some servers (Gmail) stop offering
  any message retrieved in a session that ends with QUIT, deleted or not. So a
  session ends with QUIT only when every message retrieved in it is stored and
  announced (or proven so); otherwise the connection is dropped, the server
  forgets its DELEs, and a short new session re-proves and deletes.
- **Failures are the message's.** Any failure while a message is downloaded
  or stored counts against it; after ``poison_threshold`` runs it is
  quarantined and the mailbox moves on.
- **The deadline bounds every wait.** Past the soft deadline nothing new is
  taken; at the hard cut-off the session is dropped and uploads are abandoned
  (their multipart uploads aborted), leaving time to save the state.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import IO, Any, Literal

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.message import (
    HEADER_LIMIT,
    CapturingReader,
    ServerMessage,
    StoredMessage,
    StoredObject,
    content_key,
    failure_key,
    is_sha256,
    object_key,
    parse_header_fields,
    uidl_digest,
)
from pop3_ingest.domain.options import MIB, IngestOptions
from pop3_ingest.domain.ports import SQS_BATCH_SIZE, Announcer, MessageStore, MessageStream, Session
from pop3_ingest.domain.state import Deleted, Failure, MailboxState, Seen
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AnnounceError,
    ConnectionLost,
    MailboxBusy,
    Pop3Error,
    Pop3IngestError,
    ProtocolError,
    StoreError,
)

logger = logging.getLogger(__name__)


# -- the run -------------------------------------------------------------------

# After this many sessions in a row end without QUIT, the run stops.
ABANDONED_SESSIONS_LIMIT = 3
# After this many pointer batches in a row fail, the queue is down, not a message.
_QUEUE_FAILURE_LIMIT = 2
_BATCH_WAIT_SECONDS = 0.05
# The longest a blocked loop waits before it looks at the deadline again.
_POLL_SECONDS = 0.05
_FAILURES_KEPT = 20
# At the cut-off, how long abandoned uploads get to abort their multipart uploads.
_ABORT_GRACE_SECONDS = 3.0
# A read cut off this close to the cut-off was stopped by the run's clock.
_CUTOFF_SLACK_SECONDS = 1.0


class MailboxIngest:
    def __init__(
        self,
        mailbox_name: str,
        connect: Callable[[], Session],
        store: MessageStore,
        announcer: Announcer,
        deadline: Deadline,
        options: IngestOptions | None = None,
        state: MailboxState | None = None,
        on_quarantine: Callable[[ServerMessage, Failure], None] | None = None,
    ) -> None:
        self.mailbox_name = mailbox_name
        self.state = state or MailboxState()
        self.options = options or IngestOptions()
        self.store = store
        self.announcer = announcer
        self.deadline = deadline
        self.login_delay = 0
        self.summary = RunSummary(mailbox=mailbox_name)
        self._on_quarantine = on_quarantine
        self._connect = connect
        # Unique UIDLs this run is done with, whatever the outcome.
        self.handled: set[str] = set()
        # Unique UIDLs this run downloaded to prove an earlier store (once each).
        self.reproved: set[str] = set()
        # Messages without a unique UIDL taken by this run, by failure_key:
        # a later session of the run does not take as many again.
        self.shared_taken: Counter[str] = Counter()
        self.queue_failures = 0
        self.taken = 0
        # Quarantined by this run, and given their one more try by this run:
        # a blocked window is retried once per run, never in a loop.
        self.quarantined_now: set[str] = set()
        self.retried: set[str] = set()
        # Set at the hard cut-off: running uploads give up.
        self.cancelled = threading.Event()

    def run(self) -> RunSummary:
        summary = self.summary
        first = True
        upload_pool = ThreadPoolExecutor(
            max_workers=self.options.upload_workers, thread_name_prefix="upload"
        )
        # Its own threads, so pointers never queue behind uploads.
        announce_pool = ThreadPoolExecutor(
            max_workers=self.options.upload_workers, thread_name_prefix="announce"
        )
        abandoned_in_a_row = 0
        try:
            while True:
                outcome = self._one_session(upload_pool, announce_pool, first)
                if outcome is None:
                    return summary  # busy on a reconnect; stopped says so
                first = False
                if outcome.stop is not None:
                    summary.stopped = outcome.stop
                    return summary
                abandoned_in_a_row = 0 if outcome.may_quit else abandoned_in_a_row + 1
                if abandoned_in_a_row >= ABANDONED_SESSIONS_LIMIT:
                    logger.warning(
                        "sessions keep ending without QUIT; the rest waits for the next run",
                        extra={"sessions": abandoned_in_a_row},
                    )
                    summary.stopped = StopReason.REPEATED_FAILURES
                    return summary
                if not (outcome.commit_and_continue or outcome.look_for_more):
                    return summary
                if self.login_delay:
                    # RFC 2449: every login honours the server's pause.
                    logger.info(
                        "more work needs another login; the server asks for a pause first",
                        extra={"login_delay": self.login_delay},
                    )
                    summary.stopped = StopReason.LOGIN_DELAY
                    return summary
                if self.deadline.seconds_left() <= 0:
                    summary.stopped = StopReason.DEADLINE
                    return summary
                if outcome.look_for_more:
                    logger.info("large listing drained; reconnecting for more")
        finally:
            # Nothing here waits: past the cut-off running uploads give up on
            # their own, and their messages were not deleted.
            self.cancelled.set()
            upload_pool.shutdown(wait=False, cancel_futures=True)
            announce_pool.shutdown(wait=False, cancel_futures=True)

    def _one_session(
        self, upload_pool: ThreadPoolExecutor, announce_pool: ThreadPoolExecutor, first: bool
    ) -> _SessionOutcome | None:
        try:
            session = self._connect()
            with session:
                self.summary.sessions += 1
                self.login_delay = session.login_delay
                engine = _SessionRun(self, session, upload_pool, announce_pool, first)
                try:
                    outcome = engine.run()
                except BaseException:
                    session.abandon()  # never QUIT on a path we did not plan for
                    raise
                if not outcome.may_quit:
                    self.summary.abandoned_sessions += 1
                    session.abandon()
        except MailboxBusy as exc:
            # Only login raises it. On a later session of this run (after a
            # commit) what was committed stays committed; the rest waits.
            if first:
                raise
            logger.warning("mailbox busy on reconnect", extra={"code": exc.code})
            self.summary.stopped = StopReason.BUSY
            return None
        except Pop3Error as exc:
            if first:
                raise
            # A reconnect that fails ends the run; nothing of it was deleted.
            logger.error("reconnect failed", extra={"error": str(exc)})
            self.summary.stopped = StopReason.CONNECTION_LOST
            return None
        if session.quit_ok:
            self._committed(outcome.marked)
        elif outcome.marked:
            logger.warning(
                "session not committed; its deletions are proven again next time",
                extra={"marked": len(outcome.marked)},
            )
        return outcome

    def _committed(self, marked: list[tuple[ServerMessage, str]]) -> None:
        now = time.time()
        for message, sha256 in marked:
            if message.unique:
                digest = uidl_digest(message.uidl)
                self.state.seen.pop(digest, None)
                self.state.deleted[digest] = Deleted(at=now, size=message.size, sha256=sha256)
        self.summary.deleted += len(marked)

    def fail(self, message: ServerMessage, reason: str, *, poison: bool = True) -> None:
        """One message failed: it stays on the server; repeated failures quarantine it."""
        summary = self.summary
        summary.failed += 1
        if len(summary.failures) < _FAILURES_KEPT:
            summary.failures.append({"uidl": message.uidl[:80], "error": reason[:300]})
        logger.error(
            "message left on server",
            extra={"message_number": message.number, "size": message.size, "error": reason},
        )
        if not poison:
            return
        key = failure_key(message)
        held = self.state.quarantined.get(key)
        if held is not None:
            # A quarantined message tried again (a blocked window) and failed
            # again: it stays quarantined, with its count brought up to date.
            held.count += 1
            held.error = reason[:500]
            held.last_at = time.time()
            return
        if self.state.record_failure(key, reason, self.options.poison_threshold, time.time()):
            self.quarantined_now.add(key)
            summary.quarantined += 1
            failure = self.state.quarantined[key]
            logger.error(
                "message quarantined after repeated failures; left on server",
                extra={"message_number": message.number, "failures": failure.count},
            )
            if self._on_quarantine is not None:
                try:
                    self._on_quarantine(message, failure)
                except Pop3IngestError as exc:
                    logger.error("quarantine record not written", extra={"error": str(exc)})


@dataclass
class _SessionOutcome:
    # DELEs answered +OK, with the digest that proved each: committed only by QUIT.
    marked: list[tuple[ServerMessage, str]] = field(default_factory=list)
    stop: StopReason | None = None
    commit_and_continue: bool = False
    look_for_more: bool = False
    may_quit: bool = True


@dataclass
class _Download:
    """A retrieved message: its exact bytes (in memory or spooled) and digest."""

    message: ServerMessage
    sha256: str
    size: int
    head: bytes
    data: bytes | None = None
    spool: IO[bytes] | None = None

    def close(self) -> None:
        if self.spool is not None:
            with suppress(OSError):
                self.spool.close()


@dataclass
class _Stored:
    message: ServerMessage
    record: StoredMessage
    new: bool
    ready_at: float = field(default_factory=time.monotonic)


_Command = Literal["RETR", "DELE"]


class _SessionRun:
    """One POP3 session of a run: pipelined RETRs, overlapped uploads, DELEs."""

    def __init__(
        self,
        run: MailboxIngest,
        mailbox: Session,
        upload_pool: ThreadPoolExecutor,
        announce_pool: ThreadPoolExecutor,
        first: bool,
    ) -> None:
        self.run_ = run
        self.mailbox = mailbox
        self.upload_pool = upload_pool
        self.announce_pool = announce_pool
        self.first = first
        self.opts = run.options
        self.summary = run.summary
        self.deadline = run.deadline
        self.window = self.opts.pipeline_window if mailbox.pipelining else 1
        self.outstanding: deque[tuple[_Command, ServerMessage]] = deque()
        self.to_fetch: deque[ServerMessage] = deque()
        self.to_delete: deque[tuple[ServerMessage, str]] = deque()
        # Messages retried one at a time, read as mail whatever their first line.
        self.retried_alone: set[int] = set()
        # Message number -> the digest that proved it, for each DELE in flight.
        self.dele_digests: dict[int, str] = {}
        # UIDL -> the digest of the object stored and announced for it before.
        self.prove: dict[str, str] = {}
        # Of those, the UIDLs whose deletion was committed before (reappearing).
        self.reappearing: set[str] = set()
        self.uploads: dict[Future[_Stored], _Download] = {}
        self.announces: dict[Future[set[int]], list[_Stored]] = {}
        self.ready: list[_Stored] = []
        self.completed: SimpleQueue[Future[Any]] = SimpleQueue()
        # Messages retrieved in this session, and those of them confirmed
        # (stored and announced, or proven): QUIT only when the two agree.
        self.retrieved: set[int] = set()
        self.confirmed: set[int] = set()
        self.held = 0  # bytes of downloaded messages in memory, awaiting upload
        self.spooled = 0  # bytes of spooled messages awaiting upload
        self.sent_retr = 0
        self.sent_bytes = 0
        self.listed = 0
        self.outcome = _SessionOutcome()
        self.started = time.monotonic()
        self.fetching = True
        self.line_up = True  # False once the connection is lost or dropped
        # The line broke while a message was being read (counted against it).
        self.lost_on_a_message = False
        self.no_quit_reason = ""

    # -- driver ---------------------------------------------------------------

    def run(self) -> _SessionOutcome:
        try:
            self._plan()
            self._pump()
        except ConnectionLost as exc:
            logger.error(
                "connection lost; no deletion of this session counts", extra={"error": str(exc)}
            )
            self.line_up = False
            if not self.lost_on_a_message:
                self.outcome.stop = StopReason.CONNECTION_LOST
            # Else the message that broke the line was counted against it and
            # is not taken again this run: a new session goes on behind it.
            self._lose_line()
            self._settle()
        return self._finish()

    def _pump(self) -> None:
        while True:
            if self.deadline.cut_off():
                self._cut_off()
                return
            if self.fetching and self.deadline.seconds_left() <= 0:
                self._stop_fetching(StopReason.DEADLINE)
            self._harvest(block=False)
            self._send()
            if self.outstanding:
                if self._must_wait_before_reading():
                    self._harvest(block=True)
                    continue
                self._read_one()
            elif self.to_delete and not self.no_quit_reason:
                continue  # _send writes them on the next turn
            elif self.uploads or self.announces:
                self._harvest(block=True)
            elif self.ready:
                self._announce(force=True)
            else:
                return

    def _settle(self) -> None:
        """The line is gone: let what is stored be announced, until the cut-off.

        Announced messages are remembered with their digest, so the next
        session proves and deletes them without a second pointer.
        """
        while (self.uploads or self.announces or self.ready) and not self.deadline.cut_off():
            if self.uploads or self.announces:
                self._harvest(block=True)
            else:
                self._announce(force=True)
        if self.uploads or self.announces:
            self._cut_off()

    def _finish(self) -> _SessionOutcome:
        unconfirmed = self.retrieved - self.confirmed
        if unconfirmed and not self.no_quit_reason:
            self.no_quit_reason = f"{len(unconfirmed)} retrieved message(s) not confirmed"
        if self.no_quit_reason or not self.line_up:
            self.outcome.may_quit = False
            self.outcome.marked = []
            if self.line_up:
                logger.warning(
                    "session ends without QUIT, so nothing unconfirmed counts as retrieved",
                    extra={"reason": self.no_quit_reason},
                )
            if self.outcome.stop is None:
                # The confirmed messages are proven and deleted in a new session.
                self.outcome.commit_and_continue = True
            return self.outcome
        if (
            self.outcome.stop is None
            and not self.outcome.commit_and_continue
            and self.listed >= self.opts.capped_listing
            and self.outcome.marked
        ):
            # Some providers (Gmail: about 250) list only part of a big
            # mailbox per session; look again while there is time.
            self.outcome.look_for_more = True
        return self.outcome

    def _no_quit(self, reason: str) -> None:
        """Something retrieved cannot be confirmed: stop taking more; no QUIT."""
        if not self.no_quit_reason:
            self.no_quit_reason = reason
        self.fetching = False
        self.to_delete.clear()  # void without QUIT; the next session proves them again

    def _stop_fetching(self, reason: StopReason | Literal["commit"]) -> None:
        self.fetching = False
        if reason == "commit":
            self.outcome.commit_and_continue = True
        elif self.outcome.stop is None:
            self.outcome.stop = reason
            if reason is StopReason.DEADLINE:
                logger.warning("deadline near; taking no more messages")

    def _cut_off(self) -> None:
        """Out of time: drop the line, abandon uploads, wait for nothing."""
        logger.warning("run cut off at its deadline; unfinished work is left for the next run")
        if self.outcome.stop is None:
            self.outcome.stop = StopReason.DEADLINE
        self.fetching = False
        self._no_quit("cut off at the deadline")
        self.line_up = False
        self.run_.cancelled.set()
        running = [upload for upload in self.uploads if not upload.cancel()]
        # Cancelled uploads abort their multipart uploads in their own thread:
        # give them a moment, while more than a quarter of the margin is left
        # (on the deadline's own clock) for saving the state.
        started = time.monotonic()
        while (
            running
            and time.monotonic() - started < _ABORT_GRACE_SECONDS
            and self.deadline.remaining_ms() / 1000 > self.deadline.margin_seconds / 4
        ):
            running = list(wait(running, timeout=_POLL_SECONDS).not_done)
        for upload, download in list(self.uploads.items()):
            self.uploads.pop(upload)
            self._release(download)
        self.announces.clear()
        self.ready.clear()

    def _lose_line(self) -> None:
        self.fetching = False
        self.to_delete.clear()
        run = self.run_
        for kind, message in self.outstanding:
            if kind == "RETR":  # never read: a later session takes it after all
                if message.unique:
                    run.handled.discard(message.uidl)
                else:
                    run.shared_taken[failure_key(message)] -= 1
        self.outstanding.clear()

    # -- planning ---------------------------------------------------------------

    def _plan(self) -> None:
        messages = self.mailbox.list_messages()
        self.listed = len(messages)
        run, state, opts = self.run_, self.run_.state, self.opts
        if self.first:
            # Listing entries that cannot be fetched safely stay on the server.
            unusable = len(getattr(self.mailbox, "skipped", ()))
            self.summary.messages_on_server = len(messages) + unusable
            self.summary.unlisted = unusable
            # A capped listing does not prove that anything left the server.
            state.forget_absent(
                {uidl_digest(m.uidl) for m in messages if m.unique}
                | {failure_key(m) for m in messages},
                time.time(),
                complete=len(messages) < opts.capped_listing,
            )
        shared_skip = Counter(run.shared_taken)
        blocking: list[ServerMessage] = []  # skipped here, yet holding a window's place
        for message in messages:
            if failure_key(message) in state.quarantined:
                self.summary.in_quarantine += self.first
                blocking.append(message)
                continue
            if not message.unique:
                key = failure_key(message)
                if shared_skip[key] > 0:
                    shared_skip[key] -= 1  # taken earlier in this run
                    continue
                if self._too_big(message):
                    blocking.append(message)
                    continue
                # No UIDL to remember it by: its digest decides, after download.
                self.to_fetch.append(message)
                continue
            digest = uidl_digest(message.uidl)
            gone = state.deleted.get(digest)
            if gone is not None and gone.size == message.size:
                # Its deletion was committed before, yet here it is (servers
                # that ignore DELE, or a reused UIDL): downloaded once per run
                # and hashed, it is the same message (not announced twice, and
                # deleted again on that proof) or new mail. Another size is
                # new mail outright.
                if message.uidl not in run.reproved:
                    run.reproved.add(message.uidl)
                    self.prove[message.uidl] = gone.sha256
                    self.reappearing.add(message.uidl)
                    self.to_fetch.append(message)
                continue
            seen = state.seen.get(digest)
            if seen is not None and seen.size != message.size:
                del state.seen[digest]  # a reused UIDL: the new message it is
                seen = None
            if seen is not None and not opts.delete:
                continue  # kept on the server and announced before
            if seen is not None and message.uidl not in run.reproved:
                # Stored and announced before; only the DELE is missing. Its
                # bytes are downloaded and hashed again: the proof.
                run.reproved.add(message.uidl)
                self.prove[message.uidl] = seen.sha256
                self.to_fetch.append(message)
                continue
            if message.uidl in run.handled:
                continue
            if self._too_big(message):
                run.handled.add(message.uidl)
                blocking.append(message)
                continue
            self.to_fetch.append(message)
        if not self.to_fetch and blocking and self.listed >= opts.capped_listing:
            self._unblock_window(blocking)
        if self.prove and opts.delete and not self.mailbox.login_delay:
            # Deletions proven first, in a short session of their own that
            # QUITs before new mail is taken: if the rest of the run is cut
            # off, they are committed all the same, so every run progresses.
            # (A server asking for a LOGIN-DELAY gets one session for all.)
            self.to_fetch = deque(m for m in self.to_fetch if m.uidl in self.prove and m.unique)
            self.outcome.commit_and_continue = True

    def _unblock_window(self, blocking: list[ServerMessage]) -> None:
        """A capped listing whose every message is skipped would hide all mail behind it
        for ever (the provider offers the same window each time). So its messages
        are taken anyway, once per run: oversized ones up to the spool budget,
        quarantined ones for one more try. Stored, they leave the window."""
        run = self.run_
        taken = [
            m
            for m in blocking
            if m.size <= self.opts.spool_budget
            and failure_key(m) not in run.quarantined_now
            and failure_key(m) not in run.retried
        ]
        run.retried.update(failure_key(m) for m in taken)
        if not taken:
            return
        # One command at a time, so a first line that reads like a status line
        # can be told from an answer out of step by its exact size.
        self.window = 1
        self.retried_alone.update(m.number for m in taken)
        logger.warning(
            "every message of a capped listing is skipped; taking them anyway so the "
            "mail behind them is reached",
            extra={"listed": self.listed, "taken": len(taken)},
        )
        for message in taken:
            if message.unique:
                self.run_.handled.add(message.uidl)
            self.to_fetch.append(message)

    def _too_big(self, message: ServerMessage) -> bool:
        if message.size <= self.opts.max_message_size:
            return False
        self.summary.oversized += self.first
        logger.warning(
            "message larger than max_message_size left on server",
            extra={"size": message.size, "limit": self.opts.max_message_size},
        )
        return True

    # -- writing commands ---------------------------------------------------------

    def _send(self) -> None:
        if not self.line_up:
            return
        commands: list[str] = []
        pending_answers = len(self.outstanding)

        def room() -> bool:
            return (pending_answers + len(commands)) < self.window

        # DELEs first: they free the server's memory of what is done.
        while self.to_delete and room() and not self.no_quit_reason:
            message, sha256 = self.to_delete.popleft()
            commands.append(f"DELE {message.number}")
            self.outstanding.append(("DELE", message))
            self.dele_digests[message.number] = sha256
        while self.fetching and self.to_fetch and room():
            message = self.to_fetch[0]
            stop = self._may_take(message)
            if stop is not None:
                self._stop_fetching(stop)
                break
            size = min(message.size, self.opts.stream_threshold)
            if self._listed_in_flight() + size > self.opts.memory_budget and (
                self._listed_in_flight() or self.held
            ):
                break  # wait for answers and uploads to free memory
            self.to_fetch.popleft()
            # Taken: later sessions of this run do not take it again.
            if message.unique:
                self.run_.handled.add(message.uidl)
            else:
                self.run_.shared_taken[failure_key(message)] += 1
            commands.append(f"RETR {message.number}")
            self.outstanding.append(("RETR", message))
            self.sent_retr += 1
            self.sent_bytes += message.size
            self.run_.taken += 1
        if commands:
            self.mailbox.send_commands(commands)

    def _listed_in_flight(self) -> int:
        threshold = self.opts.stream_threshold
        return self.held + sum(
            min(m.size, threshold) for kind, m in self.outstanding if kind == "RETR"
        )

    def _may_take(self, message: ServerMessage) -> StopReason | Literal["commit"] | None:
        opts, run = self.opts, self.run_
        if opts.max_messages and run.taken >= opts.max_messages:
            return StopReason.MESSAGE_CAP
        if run.queue_failures >= _QUEUE_FAILURE_LIMIT:
            return StopReason.QUEUE_UNAVAILABLE
        queued = sum(1 for kind, _ in self.outstanding if kind == "RETR") + len(self.uploads)
        in_flight = sum(m.size for kind, m in self.outstanding if kind == "RETR") + sum(
            d.size for d in self.uploads.values()
        )
        if not self.deadline.allows(in_flight + message.size, queued, opts.upload_workers):
            return StopReason.DEADLINE
        if (
            self.sent_retr
            and not self.mailbox.login_delay
            and (
                self.sent_retr >= opts.commit_every_messages
                or self.sent_bytes + message.size > opts.commit_every_bytes
                or time.monotonic() - self.started > opts.commit_every_seconds
            )
        ):
            return "commit"
        return None

    # -- reading answers ----------------------------------------------------------

    def _must_wait_before_reading(self) -> bool:
        """Hold back reading the next message while memory or disk is full.

        Counted in bytes actually held, so a server that lists messages as
        0 bytes cannot make the run hold more than the budget plus one message.
        """
        kind, message = self.outstanding[0]
        if kind != "RETR" or not self.uploads:
            return False
        if message.size > self.opts.stream_threshold:
            return self.spooled + message.size > self.opts.spool_budget
        return self.held >= self.opts.memory_budget

    def _read_one(self) -> None:
        kind, message = self.outstanding.popleft()
        if kind == "DELE":
            sha256 = self.dele_digests.pop(message.number)
            try:
                self.mailbox.read_dele(message)
            except ProtocolError as exc:
                logger.warning("DELE refused; message stays", extra={"error": str(exc)})
                return
            self.outcome.marked.append((message, sha256))
            return
        download = self._download(message)
        if download is None:
            return
        expected = self.prove.pop(message.uidl, None) if message.unique else None
        if expected is not None:
            if download.sha256 == expected:
                self._proven(download)
                return
            logger.warning("UIDL reused for other content; treating it as a new message")
            self.run_.state.seen.pop(uidl_digest(message.uidl), None)
            self.reappearing.discard(message.uidl)
        if not message.unique and download.sha256 in self.run_.state.seen_content:
            # Announced before under its content digest (no unique UIDL).
            self.run_.state.seen_content[download.sha256] = time.time()
            self._proven(download)
            return
        future = self.upload_pool.submit(self._store, download)
        self.uploads[future] = download
        future.add_done_callback(self.completed.put)

    def _download(self, message: ServerMessage) -> _Download | None:
        """RETR's answer, hashed; None when the server refused it. Any failure
        while reading counts against the message, whatever it was."""
        try:
            alone = message.number in self.retried_alone
            stream = self.mailbox.read_retr(message, exact_size=alone)
        except ProtocolError as exc:  # -ERR: nothing was retrieved
            self.run_.fail(message, str(exc))
            return None
        except ConnectionLost as exc:
            # A message whose first line looks like a status line lands here
            # on every run: counted, it is quarantined in time.
            self._failed_download(message, exc)
            raise
        self.retrieved.add(message.number)
        started = time.monotonic()
        try:
            if message.size > self.opts.stream_threshold:
                download = self._spool(message, stream)
            else:
                data = stream.read_all()
                download = _Download(
                    message, hashlib.sha256(data).hexdigest(), len(data), data[:HEADER_LIMIT], data
                )
                self.held += len(data)
        except ConnectionLost as exc:
            self._failed_download(message, exc)
            raise
        except ProtocolError as exc:  # grew far past its LIST size: out of step
            self.run_.fail(message, str(exc))
            raise ConnectionLost("session abandoned after an oversized answer") from exc
        except OSError as exc:  # the spool file: /tmp full
            self.run_.fail(message, f"cannot spool the message: {exc}")
            if not stream.finished:
                raise ConnectionLost("session abandoned: message could not be spooled") from exc
            self._no_quit("a retrieved message could not be kept")
            return None
        self.deadline.observe(download.size, time.monotonic() - started)
        return download

    def _failed_download(self, message: ServerMessage, exc: Exception) -> None:
        # Cut off by the run's own deadline is not the message's fault.
        near_cutoff = self.deadline.seconds_to_cutoff() <= _CUTOFF_SLACK_SECONDS
        self.run_.fail(message, str(exc), poison=not near_cutoff)
        self.lost_on_a_message = not near_cutoff

    def _spool(self, message: ServerMessage, stream: MessageStream) -> _Download:
        reader = CapturingReader(stream)
        # Named, so the store can read it by path (in parallel, and again for
        # a second key); removed when closed.
        spool = tempfile.NamedTemporaryFile(prefix="pop3-ingest-")  # noqa: SIM115  # _Download.close
        try:
            while chunk := reader.read(MIB):
                spool.write(chunk)
            spool.flush()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        self.spooled += reader.size
        return _Download(message, reader.sha256, reader.size, reader.head, spool=spool)

    def _proven(self, download: _Download) -> None:
        """The bytes just retrieved are those of a stored, announced object."""
        message = download.message
        self._release(download)
        self.confirmed.add(message.number)
        self.run_.state.record_success(failure_key(message))
        if message.uidl in self.reappearing:
            self.summary.reappeared += 1
        elif self.opts.delete:
            self.summary.redeleted += 1
        if self.opts.delete:
            self.to_delete.append((message, download.sha256))

    def _release(self, download: _Download) -> None:
        if download.spool is not None:
            self.spooled -= download.size
        else:
            self.held -= download.size
        download.close()

    # -- storing (upload threads) -----------------------------------------------

    def _store(self, download: _Download) -> _Stored:
        started = time.monotonic()
        try:
            return self._put(download)
        finally:
            self.deadline.observe_upload(time.monotonic() - started)

    def _put(self, download: _Download) -> _Stored:
        message, digest, run = download.message, download.sha256, self.run_
        if message.unique:
            key = object_key(self.opts.key_prefix, run.mailbox_name, message.uidl)
        else:
            key = content_key(self.opts.key_prefix, run.mailbox_name, digest)
        new = self._write(key, download)
        if not new and not _same(run.store.stored_object(key), download.size, digest):
            # The key holds other bytes (a reused UIDL) or bytes we cannot
            # prove: keep both, under a key that names this content.
            key = _alternate_key(key, digest)
            new = self._write(key, download)
            if not new and not _same(run.store.stored_object(key), download.size, digest):
                raise StoreError(f"{key} holds other content; message left on server")
            logger.warning("UIDL reused with different content", extra={"key": key})
        headers = parse_header_fields(download.head)
        record = StoredMessage(
            bucket=run.store.bucket,
            key=key,
            size=download.size,
            sha256=digest,
            mailbox=run.mailbox_name,
            uidl=message.uidl,
            headers=headers,
            stored_at=datetime.now(UTC),
        )
        return _Stored(message, record, new)

    def _write(self, key: str, download: _Download) -> bool:
        meta = {"mailbox": self.run_.mailbox_name}
        store = self.run_.store
        if download.data is not None:
            return store.put_bytes(key, download.data, download.sha256, meta)
        assert download.spool is not None  # nosec B101  # one of the two is always set
        cancelled = self.run_.cancelled.is_set
        return store.put_file(key, download.spool.name, download.sha256, meta, cancelled)

    # -- completions --------------------------------------------------------------

    def _harvest(self, *, block: bool) -> None:
        if not (self.uploads or self.announces):
            return
        # Short waits: the loop checks the deadline (on its own clock) between them.
        timeout = _BATCH_WAIT_SECONDS if self.ready else _POLL_SECONDS
        # Completions arrive on a queue (done callbacks): cheaper than
        # futures.wait() over every pending future on each turn of the loop.
        done: list[Future[Any]] = []
        with suppress(Empty):
            if block:
                done.append(self.completed.get(timeout=timeout))
            while True:
                done.append(self.completed.get_nowait())
        for future in done:
            if future in self.uploads:
                download = self.uploads.pop(future)
                self._release(download)
                try:
                    stored = future.result()
                except Pop3IngestError as exc:
                    self.run_.fail(download.message, str(exc))
                    self._no_quit("a retrieved message could not be stored")
                    continue
                self._stored(stored)
            elif future in self.announces:
                self._announced(self.announces.pop(future), future)
        self._announce(force=not self.outstanding and not self.uploads)

    def _stored(self, stored: _Stored) -> None:
        if stored.new:
            self.summary.stored += 1
            self.summary.bytes_stored += stored.record.size
        else:
            self.summary.already_stored += 1
        self.ready.append(stored)
        self._announce(force=False)

    def _announce(self, *, force: bool) -> None:
        # Full batches at once; a partial one once it has waited a moment.
        if self.ready and time.monotonic() - self.ready[0].ready_at >= _BATCH_WAIT_SECONDS:
            force = True
        while self.ready and (len(self.ready) >= SQS_BATCH_SIZE or force):
            batch = self.ready[:SQS_BATCH_SIZE]
            self.ready = self.ready[SQS_BATCH_SIZE:]
            future = self.announce_pool.submit(
                self.run_.announcer.announce_batch, [s.record.pointer() for s in batch]
            )
            self.announces[future] = batch
            future.add_done_callback(self.completed.put)

    def _announced(self, batch: list[_Stored], future: Future[set[int]]) -> None:
        run = self.run_
        try:
            failed = future.result()
        except AnnounceError as exc:
            run.queue_failures += 1
            for stored in batch:
                # The queue failing is not the message's fault: no poison count.
                run.fail(stored.message, str(exc), poison=False)
            self._no_quit("a pointer could not be sent")
            return
        run.queue_failures = 0
        state = run.state
        for index, stored in enumerate(batch):
            message = stored.message
            if index in failed:
                run.fail(message, "SQS rejected the pointer")
                self._no_quit("a pointer was rejected")
                continue
            self.summary.announced += 1
            self.confirmed.add(message.number)
            state.record_success(failure_key(message))
            state.release(failure_key(message))  # stored after all: no longer quarantined
            if message.unique:
                state.seen[uidl_digest(message.uidl)] = Seen(
                    size=message.size, sha256=stored.record.sha256
                )
            else:
                state.seen_content[stored.record.sha256] = time.time()
            if self.opts.delete and not self.no_quit_reason and self.line_up:
                self.to_delete.append((message, stored.record.sha256))


def _same(existing: StoredObject | None, size: int, digest: str) -> bool:
    """Only a recorded SHA-256 equal to ours proves the object holds these bytes."""
    if existing is None or existing.size != size:
        return False
    return is_sha256(existing.sha256) and existing.sha256 == digest


def _alternate_key(key: str, digest: str) -> str:
    return f"{key.removesuffix('.eml')}.{digest[:16]}.eml"
