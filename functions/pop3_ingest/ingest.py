"""The core: drain one mailbox under the delete-after-store rule.

Per message: RETR, store the exact bytes, announce a pointer, and only then
DELE; QUIT commits the deletions. To be bounded by the line rather than by
round trips, RETRs are pipelined (RFC 2449) in a bounded window, uploads run
on worker threads while the next message downloads, pointers go out in SQS
batches, and each DELE follows its confirmed message. The session is closed
with QUIT and reopened every so many messages or bytes, so a crash repeats at
most one batch.

Anything wrong with one message leaves that message on the server and the run
moves on; anything that breaks the session ends the run, and the server then
forgets every uncommitted DELE: a crash can cost a re-download, never a message.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from queue import Empty, SimpleQueue
from typing import Any, Literal, Protocol

from pop3_ingest.errors import (
    AnnounceError,
    ConnectionLost,
    MailboxBusy,
    Pop3IngestError,
    ProtocolError,
    StoreError,
)
from pop3_ingest.message import (
    CapturingReader,
    Readable,
    StoredMessage,
    StoredObject,
    object_key,
    parse_header_fields,
    uidl_digest,
)
from pop3_ingest.pop3 import ServerMessage
from pop3_ingest.state import Failure, MailboxState

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


# -- ports --------------------------------------------------------------------


class MessageStream(Readable, Protocol):
    @property
    def finished(self) -> bool: ...

    def read_all(self) -> bytes: ...

    def drain(self) -> None: ...


class Mailbox(Protocol):
    """The POP3 session as the core sees it: commands written, answers read in order."""

    @property
    def pipelining(self) -> bool: ...

    def list_messages(self) -> list[ServerMessage]: ...

    def send_commands(self, commands: list[str]) -> None: ...

    def read_retr(self, message: ServerMessage) -> MessageStream: ...

    def read_dele(self, message: ServerMessage) -> None: ...


class Session(Mailbox, AbstractContextManager["Session"], Protocol):
    """A mailbox whose ``with`` block ends in QUIT; ``quit_ok`` says if it committed."""

    @property
    def quit_ok(self) -> bool | None: ...

    def abandon(self) -> None:
        """End the session without QUIT: the server forgets its DELEs."""
        ...

    @property
    def login_delay(self) -> int:
        """Seconds the server wants between logins (RFC 2449 LOGIN-DELAY)."""
        ...


class MessageStore(Protocol):
    bucket: str

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        """Write unless the key exists; True if this call created the object."""
        ...

    def put_stream(self, key: str, body: Readable, metadata: dict[str, str]) -> bool: ...

    def stored_object(self, key: str) -> StoredObject | None: ...


class Announcer(Protocol):
    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        """Send up to ten pointers; the indexes that failed."""
        ...


# -- run policy ----------------------------------------------------------------


class StopReason(StrEnum):
    COMPLETED = "completed"
    DEADLINE = "deadline"
    MESSAGE_CAP = "message_cap"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    CONNECTION_LOST = "connection_lost"
    BUSY = "busy"
    BACKOFF = "backoff"
    NOT_DUE = "not_due"
    AUTH_SUSPENDED = "auth_suspended"


@dataclass(frozen=True)
class IngestOptions:
    key_prefix: str = "mail/"
    delete: bool = True
    max_messages: int = 0  # 0: no cap
    max_message_size: int = 50 * MIB
    pipeline_window: int = 64
    upload_workers: int = 8
    # Downloaded messages waiting for their upload; bounds memory with the
    # streaming threshold (bigger messages never sit in memory whole).
    memory_budget: int = 32 * MIB
    stream_threshold: int = 8 * MIB
    # A session is committed (QUIT, reconnect) after whichever comes first, so
    # a crash repeats at most that much work; each commit costs a reconnect.
    commit_every_messages: int = 1000
    commit_every_bytes: int = 256 * MIB
    commit_every_seconds: float = 60.0
    # Failures in a row (across runs) after which a message is quarantined.
    poison_threshold: int = 3


@dataclass
class Deadline:
    """Decides whether there is time to take one more message and still QUIT.

    The estimate learns the line's throughput and the store's latency as the
    run goes, so work is not started that cannot finish before the Lambda is
    stopped. A hard stop at the margin backs it up.
    """

    remaining_ms: Callable[[], int]
    margin_seconds: float
    bytes_per_second: float = 1_000_000.0
    upload_seconds: float = 0.2

    def seconds_left(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin_seconds

    def allows(self, size: int, queued: int = 0, workers: int = 1) -> bool:
        expected = size / self.bytes_per_second + (queued + 1) * self.upload_seconds / workers
        return self.seconds_left() > expected

    def observe(self, size: int, seconds: float) -> None:
        if size >= 256 * 1024 and seconds > 0:
            # Exponential average: one slow message does not dominate.
            self.bytes_per_second = 0.7 * self.bytes_per_second + 0.3 * (size / seconds)

    def observe_upload(self, seconds: float) -> None:
        self.upload_seconds = 0.7 * self.upload_seconds + 0.3 * seconds


@dataclass
class RunSummary:
    mailbox: str
    messages_on_server: int = 0
    stored: int = 0
    already_stored: int = 0
    announced: int = 0
    deleted: int = 0  # committed by a successful QUIT
    failed: int = 0
    oversized: int = 0
    quarantined: int = 0  # newly quarantined in this run
    in_quarantine: int = 0  # on the server and skipped because quarantined
    reappeared: int = 0  # deleted before, listed again: not announced again
    redeleted: int = 0  # announced in an earlier session, deleted now without a new pointer
    unlisted: int = 0  # listed without a usable UIDL: left on the server
    bytes_stored: int = 0
    sessions: int = 0
    stopped: StopReason = StopReason.COMPLETED
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def left_on_server(self) -> int:
        return self.messages_on_server - self.deleted


# -- the run -------------------------------------------------------------------

# After this many pointer batches in a row fail, the queue is down, not a message.
_QUEUE_FAILURE_LIMIT = 2


@dataclass
class _Stored:
    message: ServerMessage
    record: StoredMessage
    new: bool
    ready_at: float = field(default_factory=time.monotonic)


_BATCH_WAIT_SECONDS = 0.05
# A session that listed at least this many messages and deleted them all is
# followed by another: the server may have listed only part of the mailbox.
_CAPPED_LISTING = 200


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
        self._on_quarantine = on_quarantine
        self._connect = connect
        self._store = store
        self._announcer = announcer
        self._deadline = deadline
        self._options = options or IngestOptions()
        self._handled: set[str] = set()  # UIDLs this run is done with, whatever the outcome
        self.login_delay = 0
        self._confirmed: set[str] = set()  # UIDLs announced during this run
        self._queue_failures = 0
        self._taken = 0

    def run(self) -> RunSummary:
        summary = RunSummary(mailbox=self.mailbox_name)
        first = True
        pool = ThreadPoolExecutor(
            max_workers=self._options.upload_workers, thread_name_prefix="upload"
        )
        # Its own threads, so pointers never queue behind uploads.
        self._announce_pool = ThreadPoolExecutor(
            max_workers=self._options.upload_workers, thread_name_prefix="announce"
        )
        try:
            while True:
                session = self._connect()
                try:
                    with session:
                        summary.sessions += 1
                        self.login_delay = session.login_delay
                        more = _SessionRun(self, session, pool, summary, first).run()
                        if more.abandon:
                            session.abandon()
                except MailboxBusy as exc:
                    # Only login raises it. On a later session of this run (after a
                    # commit) what was committed stays committed; the rest waits.
                    if first:
                        raise
                    logger.warning("mailbox busy on reconnect", extra={"code": exc.code})
                    summary.stopped = StopReason.BUSY
                    return summary
                first = False
                if session.quit_ok:
                    self._committed(summary, more.marked)
                if more.stop is not None:
                    summary.stopped = more.stop
                    return summary
                if more.commit_and_continue:
                    continue
                if more.listed >= _CAPPED_LISTING and more.marked and session.quit_ok:
                    # Some providers (Gmail: about 250) list only part of a big
                    # mailbox per session; look again while there is time.
                    logger.info("large listing drained; reconnecting for more")
                    continue
                return summary
        finally:
            # Past the deadline, uploads still running are not waited for: their
            # messages were not deleted and a later run finds them stored.
            out_of_time = self._deadline.seconds_left() <= 0
            pool.shutdown(wait=not out_of_time, cancel_futures=True)
            self._announce_pool.shutdown(wait=not out_of_time, cancel_futures=True)

    def _committed(self, summary: RunSummary, marked: list[ServerMessage]) -> None:
        now = time.time()
        for message in marked:
            digest = uidl_digest(message.uidl)
            self.state.seen.pop(digest, None)
            self.state.deleted[digest] = now
        summary.deleted += len(marked)

    def _fail(
        self, summary: RunSummary, message: ServerMessage, reason: str, *, poison: bool = True
    ) -> None:
        """One message failed: it stays on the server; repeated failures quarantine it."""
        summary.failed += 1
        if len(summary.failures) < 20:
            summary.failures.append({"uidl": message.uidl[:80], "error": reason[:300]})
        logger.error(
            "message left on server",
            extra={"message_number": message.number, "size": message.size, "error": reason},
        )
        if not poison:
            return
        digest = uidl_digest(message.uidl)
        if self.state.record_failure(digest, reason, self._options.poison_threshold, time.time()):
            summary.quarantined += 1
            failure = self.state.quarantined[digest]
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
    marked: list[ServerMessage] = field(default_factory=list)
    stop: StopReason | None = None
    commit_and_continue: bool = False
    listed: int = 0
    # A retrieved message failed: end without QUIT so that servers which mark
    # retrieved mail as read at QUIT (Gmail) do not hide it from the next run.
    abandon: bool = False


class _SessionRun:
    """One POP3 session of a run: pipelined RETRs, overlapped uploads, DELEs."""

    def __init__(
        self,
        run: MailboxIngest,
        mailbox: Session,
        pool: ThreadPoolExecutor,
        summary: RunSummary,
        first: bool,
    ) -> None:
        self.run_ = run
        self.mailbox = mailbox
        self.pool = pool
        self.summary = summary
        self.first = first
        self.opts = run._options
        self.window = self.opts.pipeline_window if mailbox.pipelining else 1
        self.outstanding: deque[tuple[str, ServerMessage]] = deque()
        self.to_fetch: deque[ServerMessage] = deque()
        self.uploads: dict[Future[_Stored], tuple[ServerMessage, int]] = {}
        self.announces: dict[Future[set[int]], list[_Stored]] = {}
        self.ready: list[_Stored] = []
        self.to_delete: deque[ServerMessage] = deque()
        self.verify: dict[str, str] = {}  # UIDL -> sha256 prefix announced before
        self.completed: SimpleQueue[Future[Any]] = SimpleQueue()
        self.buffered = 0
        self.sent_retr = 0
        self.sent_bytes = 0
        self.outcome = _SessionOutcome()
        self.started = time.monotonic()
        self.fetching = True
        self.winding_down = False

    # -- driver ---------------------------------------------------------------

    def run(self) -> _SessionOutcome:
        try:
            self._plan()
            while True:
                if not self.winding_down and self.run_._deadline.seconds_left() <= 0:
                    self._wind_down()
                self._harvest(block=False)
                self._send()
                if self.outstanding:
                    self._read_one()
                elif self.to_delete:
                    continue  # _send writes them on the next turn
                elif self.winding_down:
                    break
                elif self.uploads or self.announces:
                    self._harvest(block=True)
                elif self.ready:
                    self._announce(force=True)
                else:
                    break
        except ConnectionLost as exc:
            logger.error(
                "connection lost; no deletion of this session counts", extra={"error": str(exc)}
            )
            self.outcome.stop = StopReason.CONNECTION_LOST
            self.outcome.marked = []
            self._settle_after_loss()
            return self.outcome
        if self.outcome.abandon:
            self.outcome.marked = []
            logger.warning("a retrieved message failed; session ends without QUIT")
            if self.outcome.stop is None:
                self.outcome.commit_and_continue = True
        return self.outcome

    def _abandon(self) -> None:
        """Stop taking messages; finish what is in flight; no QUIT at the end."""
        self.outcome.abandon = True
        self.fetching = False

    def _wind_down(self) -> None:
        """Out of time: read what is in the pipe, delete what is confirmed, and go.

        Queued uploads are cancelled and running ones not waited for; their
        messages stay on the server for the next run.
        """
        logger.warning("deadline reached; finishing the session early")
        self.winding_down = True
        self.fetching = False
        if self.outcome.stop is None:
            self.outcome.stop = StopReason.DEADLINE
        self.outcome.commit_and_continue = False
        for upload in list(self.uploads):
            if upload.cancel():
                message, size = self.uploads.pop(upload)
                self.buffered -= size
                self.run_._handled.discard(message.uidl)

    def _plan(self) -> None:
        messages = self.mailbox.list_messages()
        self.outcome.listed = len(messages)
        if self.first:
            # Listing entries without a usable UIDL stay on the server too.
            unusable = len(getattr(self.mailbox, "skipped", ()))
            self.summary.messages_on_server = len(messages) + unusable
            self.summary.unlisted = unusable
        state = self.run_.state
        if self.first:
            state.forget_absent({uidl_digest(m.uidl) for m in messages}, time.time())
        seen: set[str] = set()
        for message in messages:
            digest = uidl_digest(message.uidl)
            if digest in state.quarantined:
                self.summary.in_quarantine += self.first
                continue
            if digest in state.deleted:
                # Its deletion was committed before, yet here it is (Gmail
                # archiving, servers that ignore DELE): never announce it twice.
                self.summary.reappeared += self.first
                continue
            remembered = state.seen.get(digest)
            if remembered is not None and not remembered.startswith(f"{message.size}:"):
                # Same UIDL, other size: a server that reuses UIDLs. Treat it
                # as the new message it is (it gets its own key when stored).
                del state.seen[digest]
                remembered = None
            if remembered is not None and not self.opts.delete:
                continue  # kept on the server and announced before
            if message.uidl in self.run_._confirmed:
                # Announced earlier in this very run (its session could not
                # commit): only the DELE is missing.
                if message.uidl not in seen:
                    seen.add(message.uidl)
                    self.to_delete.append(message)
                    self.summary.redeleted += 1
                continue
            if remembered is not None and message.uidl not in self.run_._handled:
                # Announced by an earlier session; only the DELE is missing. It is
                # downloaded again to prove it is the same message (a reused UIDL
                # must never delete an unstored message), but not stored or
                # announced again.
                self.verify[message.uidl] = remembered.partition(":")[2]
            if message.uidl in self.run_._handled:
                continue
            if message.uidl in seen:
                # Two messages with one UIDL would share a key; the twin waits
                # for a later session, where it is no longer a twin.
                self.run_._fail(
                    self.summary, message, "duplicate UIDL in listing; left for later", poison=False
                )
                self.run_._handled.add(message.uidl)
                continue
            seen.add(message.uidl)
            if message.size > self.opts.max_message_size:
                self.summary.oversized += 1
                self.run_._handled.add(message.uidl)
                logger.warning(
                    "message larger than max_message_size left on server",
                    extra={"size": message.size, "limit": self.opts.max_message_size},
                )
                continue
            self.to_fetch.append(message)

    # -- writing commands ---------------------------------------------------------

    def _send(self) -> None:
        commands: list[str] = []
        pending_answers = len(self.outstanding)

        def room() -> bool:
            return (pending_answers + len(commands)) < self.window

        if self.outcome.abandon:
            self.to_delete.clear()  # void anyway; the next session deletes them
        # DELEs first: they free the server's memory of what is done.
        while self.to_delete and room():
            message = self.to_delete.popleft()
            commands.append(f"DELE {message.number}")
            self.outstanding.append(("DELE", message))
        while self.fetching and self.to_fetch and room():
            message = self.to_fetch[0]
            stop = self._may_take(message)
            if stop is not None:
                self.fetching = False
                if stop == "commit":
                    self.outcome.commit_and_continue = True
                else:
                    self.outcome.stop = stop
                break
            if message.size <= self.opts.stream_threshold:
                if self.buffered + message.size > self.opts.memory_budget and self.buffered:
                    break  # wait for uploads to free memory
                self.buffered += message.size
            self.to_fetch.popleft()
            commands.append(f"RETR {message.number}")
            self.outstanding.append(("RETR", message))
            self.sent_retr += 1
            self.sent_bytes += message.size
            self.run_._taken += 1
        if commands:
            self.mailbox.send_commands(commands)

    def _may_take(self, message: ServerMessage) -> StopReason | Literal["commit"] | None:
        opts = self.opts
        if opts.max_messages and self.run_._taken >= opts.max_messages:
            return StopReason.MESSAGE_CAP
        if self.run_._queue_failures >= _QUEUE_FAILURE_LIMIT:
            return StopReason.QUEUE_UNAVAILABLE
        queued = sum(1 for kind, _ in self.outstanding if kind == "RETR") + len(self.uploads)
        if not self.run_._deadline.allows(
            self.sent_bytes_in_flight() + message.size, queued, self.opts.upload_workers
        ):
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

    def sent_bytes_in_flight(self) -> int:
        return sum(m.size for kind, m in self.outstanding if kind == "RETR") + sum(
            size for _, size in self.uploads.values()
        )

    # -- reading answers ----------------------------------------------------------

    def _read_one(self) -> None:
        kind, message = self.outstanding.popleft()
        if kind == "DELE":
            try:
                self.mailbox.read_dele(message)
            except ProtocolError as exc:
                logger.warning("DELE refused; message stays", extra={"error": str(exc)})
                return
            self.outcome.marked.append(message)
            return
        try:
            stream = self.mailbox.read_retr(message)
        except ProtocolError as exc:
            self._release(message)
            self.run_._fail(self.summary, message, str(exc))
            self.run_._handled.add(message.uidl)
            return
        if self.winding_down:
            stream.drain()  # no time left to store it; it stays on the server
            self._release(message)
            return
        self.run_._handled.add(message.uidl)
        expected = self.verify.pop(message.uidl, None)
        if expected is not None:
            try:
                if self._verify_known(message, stream, expected):
                    return
            except ProtocolError as exc:
                self.run_._fail(self.summary, message, str(exc))
                raise ConnectionLost("session abandoned after an oversized answer") from exc
            self.run_._handled.discard(message.uidl)
            self.to_fetch.appendleft(message)  # fetch it again, as the new message it is
            self.fetching = self.fetching or not self.outcome.abandon
            return
        if message.size <= self.opts.stream_threshold:
            started = time.monotonic()
            try:
                data = stream.read_all()
            except ConnectionLost as exc:
                # Possibly this message's fault (a server that chokes on it):
                # counted, so a message that always breaks the line is quarantined.
                self._release(message)
                self.run_._fail(self.summary, message, str(exc))
                raise
            except ProtocolError as exc:  # grew far past its LIST size
                self._release(message)
                self.run_._fail(self.summary, message, str(exc))
                raise ConnectionLost("session abandoned after an oversized answer") from exc
            self.run_._deadline.observe(len(data), time.monotonic() - started)
            future = self.pool.submit(self._store_bytes, message, data)
            self.uploads[future] = (message, message.size)
            future.add_done_callback(self.completed.put)
        else:
            self._store_streaming(message, stream)

    def _verify_known(self, message: ServerMessage, stream: MessageStream, expected: str) -> bool:
        """True (and the DELE queued) when the bytes are those announced before."""
        reader = CapturingReader(stream)
        while reader.read(1 << 20):
            pass
        self._release(message)
        if reader.sha256[: len(expected)] != expected:
            logger.warning("UIDL reused for other content; treating it as a new message")
            self.run_.state.seen.pop(uidl_digest(message.uidl), None)
            return False
        self.summary.redeleted += 1
        self.to_delete.append(message)
        return True

    def _store_bytes(self, message: ServerMessage, data: bytes) -> _Stored:
        started = time.monotonic()
        try:
            return self._put_bytes(message, data)
        finally:
            self.run_._deadline.observe_upload(time.monotonic() - started)

    def _put_bytes(self, message: ServerMessage, data: bytes) -> _Stored:
        digest = hashlib.sha256(data).hexdigest()
        key = object_key(self.opts.key_prefix, self.run_.mailbox_name, message.uidl)
        store = self.run_._store
        meta = {"mailbox": self.run_.mailbox_name}
        new = store.put_bytes(key, data, digest, meta)
        if not new and not _same(store.stored_object(key), len(data), digest):
            # The key holds other bytes: the server reused a UIDL. Keep both.
            key = _alternate_key(key, digest)
            new = store.put_bytes(key, data, digest, meta)
            if not new and not _same(store.stored_object(key), len(data), digest):
                raise StoreError(f"{key} holds other content; message left on server")
            logger.warning("UIDL reused with different content", extra={"key": key})
        headers = parse_header_fields(data[: 64 * 1024])
        return _Stored(message, self._record(message, key, len(data), digest, headers), new)

    def _store_streaming(self, message: ServerMessage, stream: MessageStream) -> None:
        # Big messages go straight from the socket into a multipart upload:
        # memory stays bounded, and this session waits for it.
        key = object_key(self.opts.key_prefix, self.run_.mailbox_name, message.uidl)
        reader = CapturingReader(stream)
        started = time.monotonic()
        try:
            new = self.run_._store.put_stream(key, reader, {"mailbox": self.run_.mailbox_name})
        except StoreError as exc:
            if not stream.finished:
                stream.drain()
            self.run_._fail(self.summary, message, str(exc))
            self._abandon()
            return
        except ProtocolError as exc:
            self.run_._fail(self.summary, message, str(exc))
            raise ConnectionLost("session abandoned after an oversized answer") from exc
        if not stream.finished:
            stream.drain()
            self.run_._fail(self.summary, message, "store returned before the end of message")
            self._abandon()
            return
        self.run_._deadline.observe(reader.size, time.monotonic() - started)
        if not new:
            existing = self.run_._store.stored_object(key)
            if existing is None or existing.size != reader.size:
                # Rare (a reused UIDL on a big message): leave it for a later
                # run rather than hold a second copy of it in memory here.
                self.run_._fail(self.summary, message, f"{key} holds other content")
                self._abandon()
                return
        record = self._record(message, key, reader.size, reader.sha256, reader.header_fields())
        self._stored(_Stored(message, record, new))

    def _record(
        self,
        message: ServerMessage,
        key: str,
        size: int,
        digest: str,
        headers: dict[str, str | None],
    ) -> StoredMessage:
        return StoredMessage(
            bucket=self.run_._store.bucket,
            key=key,
            size=size,
            sha256=digest,
            mailbox=self.run_.mailbox_name,
            uidl=message.uidl,
            headers=headers,
            stored_at=datetime.now(UTC),
        )

    # -- completions --------------------------------------------------------------

    def _harvest(self, *, block: bool) -> None:
        if not (self.uploads or self.announces):
            return
        timeout = max(0.05, self.run_._deadline.seconds_left())
        if self.ready:
            timeout = min(timeout, _BATCH_WAIT_SECONDS)
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
                message, size = self.uploads.pop(future)
                self.buffered -= size
                try:
                    stored = future.result()
                except Pop3IngestError as exc:
                    self.run_._fail(self.summary, message, str(exc))
                    self._abandon()
                    continue
                self._stored(stored)
            elif future in self.announces:
                batch = self.announces.pop(future)
                self._announced(batch, future)
        if not self.winding_down:
            self._announce(force=not self.outstanding and not self.uploads)

    def _stored(self, stored: _Stored) -> None:
        self._count_stored(stored)
        self.ready.append(stored)
        if not self.winding_down:
            self._announce(force=False)

    def _count_stored(self, stored: _Stored) -> None:
        if stored.new:
            self.summary.stored += 1
            self.summary.bytes_stored += stored.record.size
        else:
            self.summary.already_stored += 1

    def _announce(self, *, force: bool) -> None:
        # Full batches at once; a partial one once it has waited a moment.
        if self.ready and time.monotonic() - self.ready[0].ready_at >= _BATCH_WAIT_SECONDS:
            force = True
        while self.ready and (len(self.ready) >= 10 or force):
            batch, self.ready = self.ready[:10], self.ready[10:]
            future = self.run_._announce_pool.submit(
                self.run_._announcer.announce_batch, [s.record.pointer() for s in batch]
            )
            self.announces[future] = batch
            future.add_done_callback(self.completed.put)

    def _announced(self, batch: list[_Stored], future: Future[set[int]]) -> None:
        try:
            failed = future.result()
        except AnnounceError as exc:
            self.run_._queue_failures += 1
            for stored in batch:
                # The queue failing is not the message's fault: no poison count.
                self.run_._fail(self.summary, stored.message, str(exc), poison=False)
            self._abandon()
            return
        self.run_._queue_failures = 0
        state = self.run_.state
        for index, stored in enumerate(batch):
            if index in failed:
                self.run_._fail(self.summary, stored.message, "SQS rejected the pointer")
                self._abandon()
                continue
            self.summary.announced += 1
            digest = uidl_digest(stored.message.uidl)
            state.record_success(digest)
            state.seen[digest] = f"{stored.message.size}:{stored.record.sha256[:32]}"
            self.run_._confirmed.add(stored.message.uidl)
            if self.opts.delete and not self.outcome.abandon:
                self.to_delete.append(stored.message)

    def _release(self, message: ServerMessage) -> None:
        if message.size <= self.opts.stream_threshold:
            self.buffered -= message.size

    def _settle_after_loss(self) -> None:
        # Uploads already running finish (a re-run then finds them stored);
        # nothing more is announced: the next run announces them once.
        for upload in list(self.uploads):
            message, _ = self.uploads.pop(upload)
            try:
                stored = upload.result()
            except Pop3IngestError as exc:
                self.run_._fail(self.summary, message, str(exc))
                continue
            self._count_stored(stored)
        for announce in list(self.announces):
            self.announces.pop(announce)
            with suppress(Pop3IngestError):
                announce.result()


def _same(existing: StoredObject | None, size: int, digest: str) -> bool:
    if existing is None or existing.size != size:
        return False
    return existing.sha256 is None or existing.sha256 == digest


def _alternate_key(key: str, digest: str) -> str:
    return f"{key.removesuffix('.eml')}.{digest[:16]}.eml"
