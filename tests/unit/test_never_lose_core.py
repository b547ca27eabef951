"""The never-lose rules of issue 8, at the core, with in-memory fakes.

The same rules are tried through the real handler in tests/hostile/ and
searched for in tests/simulation/; here each is pinned by one small example.
"""

from __future__ import annotations

import hashlib
import threading
import time
from types import TracebackType
from typing import Any

from pop3_ingest.domain.message import ServerMessage, StoredObject, failure_key, uidl_digest
from pop3_ingest.domain.state import Deleted, MailboxState, Seen
from pop3_ingest.domain.summary import StopReason
from pop3_ingest.errors import SessionOutOfStep

from .fakes import FakeMailbox, FakeQueue, FakeStore, FakeStream
from .test_ingest_core import mailbox_of, msg, run


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def announced_shas(queue: FakeQueue) -> set[str]:
    return {p["sha256"] for p in queue.sent}


class GmailMailbox(FakeMailbox):
    """Gmail's POP: a message retrieved in a session that ends with QUIT is
    no longer offered, deleted or not; a dropped session commits nothing."""

    def __init__(self, messages: dict[str, bytes], **kwargs: Any) -> None:
        super().__init__(messages, **kwargs)
        self.popped: dict[str, bytes] = {}
        self._retrieved: set[str] = set()

    def __enter__(self) -> FakeMailbox:
        self._retrieved = set()
        return super().__enter__()

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> FakeStream:
        stream = super().read_retr(message, exact_size=exact_size)
        self._retrieved.add(self._numbers[message.number])
        return stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        clean = not (self._broken or self._queue)
        super().__exit__(exc_type, exc, tb)
        if clean:
            for uidl in self._retrieved & set(self.messages):
                self.popped[uidl] = self.messages.pop(uidl)


class SlowStore(FakeStore):
    """S3 that turns slow after the first few writes, on a shared fake clock."""

    def __init__(self, clock: list[float], fast_puts: int, slow_seconds: float) -> None:
        super().__init__()
        self.clock = clock
        self.fast_puts = fast_puts
        self.slow_seconds = slow_seconds
        self.puts = 0

    def _put(self, key: str, data: bytes) -> bool:
        self.puts += 1
        if self.puts > self.fast_puts:
            self.clock[0] += self.slow_seconds
            time.sleep(0.01)
        return super()._put(key, data)


def test_gmail_at_the_deadline_every_message_is_announced_or_still_offered() -> None:
    clock = [0.0]  # seconds used of a 60 s Lambda
    contents = {f"u{i}": msg(i) for i in range(40)}
    mailbox = GmailMailbox(dict(contents))
    store = SlowStore(clock, fast_puts=5, slow_seconds=8.0)
    queue = FakeQueue()
    summary, _, _ = run(mailbox, store, queue, remaining_ms_fn=lambda: int((60 - clock[0]) * 1000))
    still_offered = set(mailbox.messages.values())
    announced = announced_shas(queue)
    for uidl, data in contents.items():
        assert data in still_offered or sha(data) in announced, uidl
    # Nothing popped without its pointer.
    for data in mailbox.popped.values():
        assert sha(data) in announced
    assert summary.stopped is StopReason.DEADLINE


class LostQuitAnswer(FakeMailbox):
    """The server commits at QUIT, but its +OK never arrives (once)."""

    lose_next_quit = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        if self.quit_ok and self.lose_next_quit:
            self.lose_next_quit = False
            self.quit_ok = False


class UnstableUidls(LostQuitAnswer):
    """After the first session, UIDLs name other messages (not stable)."""

    def list_messages(self) -> list[ServerMessage]:
        listing = super().list_messages()
        if self.sessions > 1:
            # Rename: each message now carries the UIDL another one had.
            uidls = [m.uidl for m in listing]
            renamed = uidls[1:] + uidls[:1]
            self.messages = {new: self.messages[old] for old, new in zip(uidls, renamed)}
            self._numbers = dict(enumerate(self.messages, start=1))
            listing = [
                ServerMessage(n, uidl, len(self.messages[uidl]))
                for n, uidl in self._numbers.items()
            ]
        return listing


def test_after_a_lost_quit_answer_only_proven_bytes_are_deleted() -> None:
    mailbox = UnstableUidls({"a": msg(1)}, pipelining=False)
    store, queue = FakeStore(), FakeQueue()
    state = MailboxState()
    run(mailbox, store, queue, state=state)
    # a was committed at QUIT although the answer was lost; now b arrives and
    # the server names it "a".
    mailbox.messages["b"] = msg(2)
    run(mailbox, store, queue, state=state)
    for data in (msg(1), msg(2)):
        assert data in store.objects.values()
        assert sha(data) in announced_shas(queue)


class NoDigestStore(FakeStore):
    """Objects written by an older version: no SHA-256 recorded."""

    def stored_object(self, key: str) -> StoredObject | None:
        found = super().stored_object(key)
        return None if found is None else StoredObject(size=found.size, sha256=None)


def test_an_object_without_a_digest_never_counts_as_already_stored() -> None:
    old, new = msg(1, b"A" * 100), msg(1, b"B" * 100)
    assert len(old) == len(new)
    store = NoDigestStore()
    queue = FakeQueue()
    run(FakeMailbox({"same": old}), store, queue)
    run(FakeMailbox({"same": new}), store, queue)  # a reused UIDL, same size
    assert new in store.objects.values()
    pointer = next(p for p in queue.sent if p["sha256"] == sha(new))
    assert store.objects[pointer["key"]] == new


def test_a_big_message_reusing_a_uidl_with_the_same_size_gets_its_own_object() -> None:
    old, new = b"x" * 5000, b"y" * 5000
    store, queue = FakeStore(), FakeQueue()
    run(FakeMailbox({"same": old}), store, queue, stream_threshold=1024)
    run(FakeMailbox({"same": new}), store, queue, stream_threshold=1024)
    pointer = next(p for p in queue.sent if p["sha256"] == sha(new))
    assert store.objects[pointer["key"]] == new


class StatusLineMessage(FakeMailbox):
    """Messages whose first line reads like a status line: out of step, unless
    read alone with an exact size."""

    bad_uidls: set[str] = {"bad"}  # noqa: RUF012  # a test's own constant

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> FakeStream:
        if self._numbers.get(message.number) in self.bad_uidls and not exact_size:
            self._next("RETR", message)
            self._broken = True
            raise SessionOutOfStep("RETR: the message starts with a status line")
        return super().read_retr(message, exact_size=exact_size)


def test_a_message_that_always_breaks_the_session_is_quarantined_and_the_rest_flows() -> None:
    mailbox = StatusLineMessage({"bad": b"+OK I am mail\r\n", "good": msg(2)}, pipelining=False)
    state = MailboxState()
    quarantined: list[str] = []
    for _ in range(4):
        run(mailbox, state=state, quarantined=quarantined)
    assert quarantined == ["bad"]
    assert list(mailbox.messages) == ["bad"]  # left on the server, never deleted


def test_a_connection_lost_while_streaming_counts_against_that_message() -> None:
    big = b"z" * 4000
    mailbox = FakeMailbox({"big": big, "after": msg(2)}, cut_retr={"big": 100}, pipelining=False)
    state = MailboxState()
    quarantined: list[str] = []
    for _ in range(4):
        mailbox.cut_retr = {"big": 100} if "big" in mailbox.messages else {}
        run(mailbox, state=state, quarantined=quarantined, stream_threshold=1024)
    assert quarantined == ["big"]
    assert "after" not in mailbox.messages


class CappedListing(FakeMailbox):
    """Offers only the first few messages per session."""

    cap = 3

    def list_messages(self) -> list[ServerMessage]:
        listing = super().list_messages()[: self.cap]
        self._numbers = {m.number: m.uidl for m in listing}
        return listing


def test_a_capped_window_of_status_like_messages_is_read_alone_and_passed() -> None:
    class StatusLikeWindow(CappedListing, StatusLineMessage):
        pass

    odd = {f"bad{i}": b"+OK I am mail\r\n" + bytes([65 + i]) for i in range(3)}
    mailbox = StatusLikeWindow(odd | {"after": msg(1)}, pipelining=False)
    mailbox.bad_uidls = set(odd)
    queue = FakeQueue()
    state = MailboxState()
    for _ in range(12):
        run(mailbox, queue=queue, state=state, capped_listing=3)
    assert mailbox.messages == {}
    assert {p["uidl"] for p in queue.sent} == {*odd, "after"}


def test_a_capped_window_of_oversized_messages_does_not_hide_the_mail_behind_it() -> None:
    messages = {f"big{i}": b"B" * 3000 + bytes([i]) for i in range(3)}
    messages |= {f"small{i}": msg(i) for i in range(3)}
    mailbox = CappedListing(messages)
    queue = FakeQueue()
    state = MailboxState()
    for _ in range(3):
        run(mailbox, queue=queue, state=state, max_message_size=2000, capped_listing=3)
    assert {p["uidl"] for p in queue.sent} >= {"small0", "small1", "small2"}
    assert mailbox.messages == {}


def test_a_remembered_deletion_does_not_hide_new_mail_of_another_size() -> None:
    old = msg(1)

    def remembering_old() -> MailboxState:
        state = MailboxState()
        state.deleted[uidl_digest("u")] = Deleted(at=time.time(), size=len(old), sha256=sha(old))
        return state

    # Same UIDL and size: the same message back (a server ignoring DELE).
    summary, _, queue = run(FakeMailbox({"u": old}), state=remembering_old())
    assert summary.reappeared == 1
    assert queue.sent == []
    # Same UIDL, another size: new mail.
    new = msg(1, b"a longer body this time")
    summary, _, queue = run(FakeMailbox({"u": new}), state=remembering_old())
    assert summary.reappeared == 0
    assert sha(new) in announced_shas(queue)


def test_memory_is_kept_for_messages_outside_a_capped_listing() -> None:
    state = MailboxState()
    hidden = failure_key(ServerMessage(99, "hidden", 10))
    state.record_failure(hidden, "boom", threshold=3, now=time.time())
    seen_digest = uidl_digest("kept")
    state.seen[seen_digest] = Seen(size=10, sha256=sha(b"k"))
    mailbox = CappedListing({f"u{i}": msg(i) for i in range(5)})
    run(mailbox, state=state, capped_listing=3, delete=False)
    assert hidden in state.failures
    assert seen_digest in state.seen


def test_login_delay_is_honoured_by_every_reconnect() -> None:
    mailbox = CappedListing({f"u{i}": msg(i) for i in range(7)}, login_delay=300)
    summary, _, _ = run(mailbox, capped_listing=3)
    assert summary.sessions == 1
    assert summary.stopped is StopReason.LOGIN_DELAY


class ZeroSizeListing(FakeMailbox):
    """Lists every message as 0 bytes."""

    def list_messages(self) -> list[ServerMessage]:
        return [ServerMessage(m.number, m.uidl, 0) for m in super().list_messages()]


class GatedStore(FakeStore):
    """Writes wait until released, and record how many messages were held."""

    def __init__(self, mailbox: FakeMailbox) -> None:
        super().__init__()
        self.mailbox = mailbox
        self.gate = threading.Semaphore(0)
        self.peak_unstored = 0
        self.done = 0
        self._count_lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        read = sum(1 for entry in self.mailbox.log if entry.startswith("RETR"))
        with self._count_lock:
            self.peak_unstored = max(self.peak_unstored, read - self.done)
        self.gate.acquire(timeout=0.05)
        created = super().put_bytes(key, data, sha256_hex, metadata)
        with self._count_lock:
            self.done += 1
        return created

    def put_file(
        self, key: str, path: str, sha256_hex: str, metadata: dict[str, str], cancelled: Any
    ) -> bool:
        raise AssertionError("listed as 0 bytes: never spooled")


def test_memory_budget_counts_bytes_held_not_listed_sizes() -> None:
    size = 100_000
    mailbox = ZeroSizeListing({f"u{i}": bytes([65 + i % 26]) * size for i in range(40)})
    store = GatedStore(mailbox)
    budget = 4 * size
    run(mailbox, store, memory_budget=budget, upload_workers=2)
    assert mailbox.messages == {}
    # At most the budget plus the one message being read (and one per worker
    # that has taken its message but not yet written it).
    assert store.peak_unstored * size <= budget + 3 * size


def test_a_failing_store_does_not_make_the_run_log_in_again_and_again() -> None:
    mailbox = mailbox_of(200, pipelining=False)
    store = FakeStore(fail_when_containing={b"body"})
    summary, _, _ = run(mailbox, store)
    assert summary.stopped is StopReason.REPEATED_FAILURES
    assert summary.sessions <= 3
    assert len(mailbox.messages) == 200
