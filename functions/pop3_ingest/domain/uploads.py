"""The upload and announce stage: stored on worker threads, announced in SQS batches.

Uploads run on the run's worker threads while the next message downloads;
their completions come back on a queue the session reads between commands.
Stored messages are announced in batches of up to ``SQS_BATCH_SIZE``
pointers, on threads of their own so pointers never queue behind uploads. At
the hard cut-off everything still running is given up (multipart uploads
aborted) and waited for only briefly, leaving time to save the state.

What a message's key is, and when its bytes count as already stored, is
decided here too: only a recorded SHA-256 equal to ours proves that an
existing object holds these bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import Any, Protocol

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.message import (
    ServerMessage,
    StoredMessage,
    StoredObject,
    content_key,
    is_sha256,
    object_key,
    parse_header_fields,
)
from pop3_ingest.domain.pipeline import Buffers, Download
from pop3_ingest.domain.ports import SQS_BATCH_SIZE, Announcer, MessageStore
from pop3_ingest.errors import AnnounceError, Pop3IngestError, StoreError

logger = logging.getLogger(__name__)

# A partial batch of pointers goes out once it has waited this long.
_BATCH_WAIT_SECONDS = 0.05
# The longest a blocked loop waits before it looks at the deadline again.
_POLL_SECONDS = 0.05
# At the cut-off, how long abandoned uploads get to abort their multipart uploads.
_ABORT_GRACE_SECONDS = 3.0


class UploadPools:
    """The run's worker threads, and the flag that makes running uploads give up.

    Used as a context manager: on leaving, nothing waits; running uploads give
    up on their own, and their messages were not deleted.
    """

    def __init__(self, workers: int) -> None:
        self.uploads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        # Its own threads, so pointers never queue behind uploads.
        self.announces = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="announce")
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> UploadPools:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
        self.uploads.shutdown(wait=False, cancel_futures=True)
        self.announces.shutdown(wait=False, cancel_futures=True)


@dataclass
class Stored:
    """A message stored (or found already stored), with the pointer it is announced by."""

    message: ServerMessage
    record: StoredMessage
    new: bool
    ready_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ObjectWriter:
    """Writes a downloaded message to the store (on an upload thread)."""

    store: MessageStore
    mailbox_name: str
    key_prefix: str
    deadline: Deadline
    # True once the run gives up: a spooled upload stops (and is aborted).
    cancelled: Callable[[], bool]

    def put(self, download: Download) -> Stored:
        started = time.monotonic()
        try:
            return self._place(download)
        finally:
            self.deadline.observe_upload(time.monotonic() - started)

    def _place(self, download: Download) -> Stored:
        message, digest = download.message, download.sha256
        if message.unique:
            key = object_key(self.key_prefix, self.mailbox_name, message.uidl)
        else:
            key = content_key(self.key_prefix, self.mailbox_name, digest)
        new = self._write(key, download)
        if not new and not _same(self.store.stored_object(key), download.size, digest):
            # The key holds other bytes (a reused UIDL) or bytes we cannot
            # prove: keep both, under a key that names this content.
            key = _alternate_key(key, digest)
            new = self._write(key, download)
            if not new and not _same(self.store.stored_object(key), download.size, digest):
                raise StoreError(f"{key} holds other content; message left on server")
            logger.warning("UIDL reused with different content", extra={"key": key})
        record = StoredMessage(
            bucket=self.store.bucket,
            key=key,
            size=download.size,
            sha256=digest,
            mailbox=self.mailbox_name,
            uidl=message.uidl,
            headers=parse_header_fields(download.head),
            stored_at=datetime.now(UTC),
        )
        return Stored(message, record, new)

    def _write(self, key: str, download: Download) -> bool:
        meta = {"mailbox": self.mailbox_name}
        if download.data is not None:
            return self.store.put_bytes(key, download.data, download.sha256, meta)
        assert download.spool is not None  # nosec B101  # one of the two is always set
        return self.store.put_file(key, download.spool.name, download.sha256, meta, self.cancelled)


def _same(existing: StoredObject | None, size: int, digest: str) -> bool:
    """Only a recorded SHA-256 equal to ours proves the object holds these bytes."""
    if existing is None or existing.size != size:
        return False
    return is_sha256(existing.sha256) and existing.sha256 == digest


def _alternate_key(key: str, digest: str) -> str:
    return f"{key.removesuffix('.eml')}.{digest[:16]}.eml"


class UploadListener(Protocol):
    """What the session makes of each completion (called on the session's thread)."""

    def stored(self, stored: Stored) -> None: ...

    def store_failed(self, message: ServerMessage, error: Pop3IngestError) -> None: ...

    def batch_sent(self, batch: list[Stored], rejected: set[int]) -> None:
        """SQS took the batch; ``rejected``: indexes of the pointers it refused."""
        ...

    def batch_failed(self, batch: list[Stored], error: AnnounceError) -> None: ...


class RunUploads(Protocol):
    """What a session's upload stage uses of its run."""

    @property
    def pools(self) -> UploadPools: ...

    @property
    def writer(self) -> ObjectWriter: ...

    @property
    def announcer(self) -> Announcer: ...


class UploadStage:
    """One session's uploads and pointer batches in flight, and their completions."""

    def __init__(self, run: RunUploads, buffers: Buffers, listener: UploadListener) -> None:
        self._pools = run.pools
        self._writer = run.writer
        self._announcer = run.announcer
        self._buffers = buffers
        self._listener = listener
        self._uploads: dict[Future[Stored], Download] = {}
        self._announces: dict[Future[set[int]], list[Stored]] = {}
        self._ready: list[Stored] = []
        self._completed: SimpleQueue[Future[Any]] = SimpleQueue()

    @property
    def uploading(self) -> bool:
        return bool(self._uploads)

    @property
    def busy(self) -> bool:
        """Uploads or pointer batches still running."""
        return bool(self._uploads or self._announces)

    @property
    def pending(self) -> bool:
        """Anything not yet announced: running, or stored and waiting for its batch."""
        return bool(self._uploads or self._announces or self._ready)

    def in_flight(self) -> tuple[int, int]:
        """Uploads not yet done: how many, and their bytes."""
        return len(self._uploads), sum(d.size for d in self._uploads.values())

    def submit(self, download: Download) -> None:
        future = self._pools.uploads.submit(self._writer.put, download)
        self._uploads[future] = download
        future.add_done_callback(self._completed.put)

    def harvest(self, *, block: bool, line_idle: bool) -> None:
        """Hand finished uploads and batches to the listener; send the batches due.

        ``block``: wait a moment for a completion. ``line_idle``: no answer is
        due on the line, so a partial batch need not wait for more.
        """
        if not self.busy:
            return
        for future in self._collect(block=block):
            if future in self._uploads:
                self._upload_done(future)
            elif future in self._announces:
                self._batch_done(self._announces.pop(future), future)
        self._announce(force=line_idle and not self._uploads)

    def _collect(self, *, block: bool) -> list[Future[Any]]:
        # Short waits: the loop checks the deadline (on its own clock) between them.
        timeout = _BATCH_WAIT_SECONDS if self._ready else _POLL_SECONDS
        # Completions arrive on a queue (done callbacks): cheaper than
        # futures.wait() over every pending future on each turn of the loop.
        done: list[Future[Any]] = []
        with suppress(Empty):
            if block:
                done.append(self._completed.get(timeout=timeout))
            while True:
                done.append(self._completed.get_nowait())
        return done

    def _upload_done(self, future: Future[Stored]) -> None:
        download = self._uploads.pop(future)
        self._buffers.release(download)
        try:
            stored = future.result()
        except Pop3IngestError as exc:
            self._listener.store_failed(download.message, exc)
            return
        self._listener.stored(stored)
        self._ready.append(stored)
        self._announce(force=False)

    def _batch_done(self, batch: list[Stored], future: Future[set[int]]) -> None:
        try:
            rejected = future.result()
        except AnnounceError as exc:
            self._listener.batch_failed(batch, exc)
            return
        self._listener.batch_sent(batch, rejected)

    def flush(self) -> None:
        """Send what is stored, in batches, without waiting for more."""
        self._announce(force=True)

    def _announce(self, *, force: bool) -> None:
        # Full batches at once; a partial one once it has waited a moment.
        if self._ready and time.monotonic() - self._ready[0].ready_at >= _BATCH_WAIT_SECONDS:
            force = True
        while self._ready and (len(self._ready) >= SQS_BATCH_SIZE or force):
            batch = self._ready[:SQS_BATCH_SIZE]
            self._ready = self._ready[SQS_BATCH_SIZE:]
            pointers = [s.record.pointer() for s in batch]
            future = self._pools.announces.submit(self._announcer.announce_batch, pointers)
            self._announces[future] = batch
            future.add_done_callback(self._completed.put)

    def abandon(self, deadline: Deadline) -> None:
        """Out of time: running uploads give up, and nothing waits long for them.

        Pointer batches already on their way are not waited for (a hung queue
        must not hold the run), but those that arrived meanwhile are recorded as
        announced, so the next run proves their messages instead of announcing
        them again.
        """
        self._pools.cancel()
        running: list[Future[Any]] = [u for u in self._uploads if not u.cancel()]
        for sending in self._announces:
            sending.cancel()  # not started yet: never sent
        # Cancelled uploads abort their multipart uploads in their own thread:
        # give them a moment, while more than a quarter of the margin is left
        # (on the deadline's own clock) for saving the state.
        started = time.monotonic()
        while (
            running
            and time.monotonic() - started < _ABORT_GRACE_SECONDS
            and deadline.remaining_ms() / 1000 > deadline.margin_seconds / 4
        ):
            running = list(wait(running, timeout=_POLL_SECONDS).not_done)
        for future, batch in list(self._announces.items()):
            if future.done() and not future.cancelled():
                self._batch_done(batch, future)
        for download in self._uploads.values():
            self._buffers.release(download)
        self._uploads.clear()
        self._announces.clear()
        self._ready.clear()
