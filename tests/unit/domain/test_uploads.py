"""The upload and announce stage with an in-memory store and queue."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.domain.pipeline import Buffers, Download
from pop3_ingest.domain.ports import SQS_BATCH_SIZE
from pop3_ingest.domain.uploads import ObjectWriter, Stored, UploadPools, UploadStage
from pop3_ingest.errors import AnnounceError, Pop3IngestError

from ..fakes import FakeQueue, FakeStore


def deadline() -> Deadline:
    return Deadline(lambda: 600_000, margin_seconds=10)


def download(number: int, data: bytes, *, unique: bool = True) -> Download:
    message = ServerMessage(number, f"u{number}" if unique else "same", len(data), unique=unique)
    return Download(message, hashlib.sha256(data).hexdigest(), len(data), data, data)


def writer(store: FakeStore, cancelled: Callable[[], bool] = lambda: False) -> ObjectWriter:
    return ObjectWriter(store, "box", "mail/", deadline(), cancelled)


class Listener:
    def __init__(self) -> None:
        self.stored_: list[Stored] = []
        self.failed: list[ServerMessage] = []
        self.batches: list[list[Stored]] = []
        self.queue_errors: list[AnnounceError] = []

    def stored(self, stored: Stored) -> None:
        self.stored_.append(stored)

    def store_failed(self, message: ServerMessage, error: Pop3IngestError) -> None:
        self.failed.append(message)

    def batch_sent(self, batch: list[Stored], rejected: set[int]) -> None:
        self.batches.append(batch)

    def batch_failed(self, batch: list[Stored], error: AnnounceError) -> None:
        self.queue_errors.append(error)


@dataclass(frozen=True)
class Run:
    pools: UploadPools
    writer: ObjectWriter
    announcer: FakeQueue


@pytest.fixture
def pools() -> Iterator[UploadPools]:
    with UploadPools(workers=2) as running:
        yield running


def settle(stage: UploadStage) -> None:
    for _ in range(1000):
        if not stage.pending:
            return
        stage.harvest(block=True, line_idle=True)
        if not stage.busy:
            stage.flush()
    raise AssertionError("the stage never settled")


def stage_of(
    pools: UploadPools, store: FakeStore, queue: FakeQueue, buffers: Buffers | None = None
) -> tuple[UploadStage, Listener]:
    listener = Listener()
    run = Run(pools, writer(store, pools.cancelled), queue)
    stage = UploadStage(run, buffers or Buffers(), listener)
    return stage, listener


def test_a_message_lands_under_a_key_named_by_its_uidl_or_its_content() -> None:
    store = FakeStore()
    by_uidl = writer(store).put(download(1, b"one"))
    by_content = writer(store).put(download(2, b"two", unique=False))
    assert by_uidl.new
    assert by_content.new
    assert by_content.record.sha256 in by_content.record.key
    assert by_uidl.record.sha256 not in by_uidl.record.key
    assert store.objects[by_uidl.record.key] == b"one"


def test_the_same_bytes_again_are_already_stored() -> None:
    store = FakeStore()
    first = writer(store).put(download(1, b"one"))
    again = writer(store).put(download(1, b"one"))
    assert not again.new
    assert again.record.key == first.record.key
    assert len(store.objects) == 1


def test_other_bytes_under_a_used_key_get_a_key_of_their_own() -> None:
    store = FakeStore()
    first = writer(store).put(download(1, b"old"))
    other = writer(store).put(download(1, b"new"))
    assert other.new
    assert other.record.key != first.record.key
    assert store.objects[other.record.key] == b"new"


def test_stored_messages_are_announced_in_full_batches(pools: UploadPools) -> None:
    store, queue, buffers = FakeStore(), FakeQueue(), Buffers()
    stage, listener = stage_of(pools, store, queue, buffers)
    count = 2 * SQS_BATCH_SIZE + 3
    for number in range(count):
        item = download(number, f"message {number}".encode())
        buffers.held += item.size
        stage.submit(item)
    settle(stage)
    assert len(listener.stored_) == count
    assert sum(len(batch) for batch in listener.batches) == count
    assert all(len(batch) <= SQS_BATCH_SIZE for batch in listener.batches)
    assert len(queue.sent) == count
    assert buffers.held == 0  # every upload let its bytes go


def test_a_failed_upload_and_a_failed_batch_are_reported(pools: UploadPools) -> None:
    store = FakeStore(fail_when_containing={b"POISON"})
    stage, listener = stage_of(pools, store, FakeQueue(failing=True))
    stage.submit(download(1, b"POISON"))
    stage.submit(download(2, b"fine"))
    settle(stage)
    assert [m.number for m in listener.failed] == [1]
    assert len(listener.queue_errors) == 1
    assert not listener.batches


class BlockingStore(FakeStore):
    """Uploads that run until they are told to give up."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        self.started.set()
        self.release.wait(timeout=10)
        return super().put_bytes(key, data, sha256_hex, metadata)


def test_at_the_cut_off_uploads_are_given_up_and_their_bytes_let_go(pools: UploadPools) -> None:
    store, buffers = BlockingStore(), Buffers()
    stage, listener = stage_of(pools, store, FakeQueue(), buffers)
    item = download(1, b"slow")
    buffers.held += item.size
    stage.submit(item)
    assert store.started.wait(timeout=10)
    try:
        stage.abandon(Deadline(lambda: 0, margin_seconds=10))  # no time left to wait
    finally:
        store.release.set()
    assert pools.cancelled()
    assert not stage.pending
    assert buffers.held == 0
    assert listener.stored_ == []
