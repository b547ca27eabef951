"""The delete-after-store rule and the run policy, with in-memory fakes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.domain.summary import RunSummary, StopReason

from .fakes import FakeMailbox, FakeQueue, FakeStore, SharedUidlListing


def msg(i: int, extra: bytes = b"") -> bytes:
    return f"Subject: message {i}\r\nMessage-ID: <{i}@test>\r\n\r\nbody {i}\r\n".encode() + extra


def run(
    mailbox: FakeMailbox,
    store: FakeStore | None = None,
    queue: FakeQueue | None = None,
    *,
    remaining_ms: int = 600_000,
    remaining_ms_fn: Callable[[], int] | None = None,
    state: MailboxState | None = None,
    quarantined: list[str] | None = None,
    **options: object,
) -> tuple[RunSummary, FakeStore, FakeQueue]:
    store = store or FakeStore()
    queue = queue or FakeQueue()
    ingest = MailboxIngest(
        mailbox_name="box",
        connect=lambda: mailbox,
        store=store,
        announcer=queue,
        deadline=Deadline(remaining_ms_fn or (lambda: remaining_ms), margin_seconds=10),
        options=IngestOptions(**options),  # type: ignore[arg-type]
        state=state,
        on_quarantine=(lambda m, f: quarantined.append(m.uidl))
        if quarantined is not None
        else None,
    )
    return ingest.run(), store, queue


def mailbox_of(count: int, **kwargs: object) -> FakeMailbox:
    return FakeMailbox({f"u{i}": msg(i) for i in range(count)}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("pipelining", [True, False])
def test_every_message_is_stored_announced_then_deleted_in_that_order(pipelining: bool) -> None:
    log: list[str] = []
    mailbox = mailbox_of(25, pipelining=pipelining, log=log)
    original = dict(mailbox.messages)
    summary, store, _ = run(mailbox, FakeStore(log=log), FakeQueue(log=log))

    assert summary.stored == summary.deleted == 25
    assert summary.stopped is StopReason.COMPLETED
    assert mailbox.messages == {}
    for uidl in original:
        retr = log.index(f"RETR {uidl}")
        send = log.index(f"SEND {uidl}")
        dele = log.index(f"DELE {uidl}")
        assert retr < send < dele
        put = next(i for i, e in enumerate(log) if e.startswith("PUT") and i > retr)
        assert put < send
    assert sorted(store.objects.values()) == sorted(original.values())
    if not pipelining:
        assert mailbox.max_in_flight == 1


def test_pipelining_keeps_a_bounded_window_of_commands_in_flight() -> None:
    mailbox = mailbox_of(40)
    run(mailbox, pipeline_window=8)
    assert 1 < mailbox.max_in_flight <= 8


def test_pointers_are_sent_in_batches_of_up_to_ten() -> None:
    summary, _, queue = run(mailbox_of(35))
    assert summary.announced == 35
    assert queue.batches < 35


def test_pointer_carries_digest_size_and_headers() -> None:
    body = msg(7)
    _, store, queue = run(FakeMailbox({"abc": body}))
    (pointer,) = queue.sent
    assert pointer["sha256"] == hashlib.sha256(body).hexdigest()
    assert pointer["size"] == len(body)
    assert pointer["subject"] == "message 7"
    assert pointer["message_id"] == "<7@test>"
    assert pointer["uidl"] == "abc"
    assert pointer["bucket"] == "bucket"
    assert store.objects[pointer["key"]] == body


def test_store_failure_keeps_only_that_message_on_server() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2, b"POISON"), "c": msg(3)})
    summary, _, queue = run(mailbox, FakeStore(fail_when_containing={b"POISON"}))
    assert list(mailbox.messages) == ["b"]
    assert summary.failed == 1
    assert summary.deleted == 2
    assert sorted(p["uidl"] for p in queue.sent) == ["a", "c"]


def test_queue_failure_deletes_nothing_and_stops_early() -> None:
    mailbox = mailbox_of(50, pipelining=False)
    summary, store, _ = run(mailbox, queue=FakeQueue(failing=True))
    assert not any(entry.startswith("DELE") for entry in mailbox.log)
    assert summary.deleted == 0
    assert summary.stopped is StopReason.QUEUE_UNAVAILABLE
    assert len(mailbox.messages) == 50
    assert 0 < len(store.objects) < 50  # it stopped taking messages


def test_connection_cut_mid_message_voids_the_session_and_a_new_one_goes_on() -> None:
    mailbox = FakeMailbox(
        {"a": msg(1), "b": msg(2), "c": msg(3)}, cut_retr={"b": 10}, pipelining=False
    )
    summary, store, _ = run(mailbox)
    assert msg(2) not in store.objects.values()  # no partial copy was written
    assert list(mailbox.messages) == ["b"]  # counted against b, left on the server
    assert summary.failed == 1
    assert summary.abandoned_sessions == 1  # the broken session committed nothing
    assert summary.deleted == 2  # a (proven again) and c, in later sessions


def test_rerun_after_crash_does_not_store_twice() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2), "c": msg(3)}, cut_retr={"c": 5})
    store = FakeStore()
    puts: list[str] = []
    store.log = puts
    run(mailbox, store)
    mailbox.cut_retr.clear()
    run(mailbox, store)
    assert mailbox.messages == {}
    assert len(store.objects) == 3
    assert sorted(puts) == sorted(set(puts))  # each message written once


def test_reused_uidl_with_different_content_is_kept_under_another_key() -> None:
    store = FakeStore()
    run(FakeMailbox({"same": msg(1)}), store)
    summary, _, queue = run(FakeMailbox({"same": msg(2, b"different and longer")}), store)
    assert summary.stored == 1
    assert len(store.objects) == 2
    assert queue.sent[0]["key"].endswith(queue.sent[0]["sha256"][:16] + ".eml")


def test_refused_retr_skips_only_that_message() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)}, refuse_retr={"a"})
    summary, _, queue = run(mailbox)
    assert summary.failed == 1
    assert [p["uidl"] for p in queue.sent] == ["b"]
    assert list(mailbox.messages) == ["a"]


def test_keep_on_server_mode_never_deletes() -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    summary, _, _ = run(mailbox, delete=False)
    assert summary.stored == 1
    assert summary.deleted == 0
    assert "DELE a" not in mailbox.log


def test_message_cap_stops_run() -> None:
    summary, _, _ = run(mailbox_of(5), max_messages=2)
    assert summary.stopped is StopReason.MESSAGE_CAP
    assert summary.deleted == 2


def test_session_is_committed_and_reopened_every_n_messages() -> None:
    mailbox = mailbox_of(23)
    summary, _, _ = run(mailbox, commit_every_messages=10)
    assert summary.sessions == 3
    assert mailbox.log.count("QUIT") == 3
    assert summary.deleted == 23
    assert mailbox.messages == {}


def test_session_is_committed_every_m_bytes() -> None:
    mailbox = mailbox_of(6)
    size = len(msg(1))
    summary, _, _ = run(mailbox, commit_every_bytes=size * 2 + 1)
    assert summary.sessions == 3
    assert summary.deleted == 6


def test_oversized_messages_are_left_on_server_and_counted() -> None:
    mailbox = FakeMailbox({"small": msg(1), "big": msg(2, b"x" * 5000)})
    summary, _store, _ = run(mailbox, max_message_size=2000)
    assert summary.oversized == 1
    assert list(mailbox.messages) == ["big"]
    assert "RETR big" not in mailbox.log


def test_big_messages_stream_through_the_store() -> None:
    big = msg(1, b"y" * 50_000)
    mailbox = FakeMailbox({"big": big, "small": msg(2)})
    summary, store, queue = run(mailbox, stream_threshold=10_000)
    assert summary.deleted == 2
    assert big in store.objects.values()
    pointer = next(p for p in queue.sent if p["uidl"] == "big")
    assert pointer["sha256"] == hashlib.sha256(big).hexdigest()


def test_deadline_too_close_takes_nothing() -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    summary, store, _ = run(mailbox, remaining_ms=5_000)  # margin is 10 s
    assert summary.stopped is StopReason.DEADLINE
    assert store.objects == {}
    assert not any(entry.startswith("RETR") for entry in mailbox.log)


def test_deadline_estimate_accounts_for_size_and_queued_uploads() -> None:
    deadline = Deadline(lambda: 30_000, margin_seconds=10, bytes_per_second=1_000_000)
    assert deadline.allows(1_000)
    assert not deadline.allows(50_000_000)
    assert not deadline.allows(1_000, queued=1_000, workers=8)
    deadline.observe(10_000_000, 1.0)  # the line turned out fast
    assert deadline.bytes_per_second > 1_000_000


def test_messages_sharing_a_uidl_are_drained_by_content_in_one_session() -> None:
    mailbox = SharedUidlListing({"a": msg(1), "b": msg(2), "c": msg(3)})
    contents = set(mailbox.messages.values())
    summary, store, queue = run(mailbox)
    assert mailbox.messages == {}
    assert set(store.objects.values()) == contents
    # Each object is named by its own content digest.
    for key, data in store.objects.items():
        assert hashlib.sha256(data).hexdigest() in key
    assert sorted(p["sha256"] for p in queue.sent) == sorted(
        hashlib.sha256(c).hexdigest() for c in contents
    )
    assert summary.deleted == 3
    assert summary.sessions == 1


def test_messages_sharing_a_uidl_in_keep_mode_are_announced_once_each() -> None:
    mailbox = SharedUidlListing({"a": msg(1), "b": msg(2)})
    state = MailboxState()
    queue = FakeQueue()
    run(mailbox, queue=queue, state=state, delete=False)
    run(mailbox, queue=queue, state=state, delete=False)
    assert len(mailbox.messages) == 2
    assert len(queue.sent) == 2
    assert len({p["sha256"] for p in queue.sent}) == 2


class QueueHeldUntilAllRead(FakeQueue):
    """A queue that answers only once every message was read: a copy of one content
    is then always retrieved while the first copy's pointer is still on its way."""

    def __init__(self, mailbox: FakeMailbox, fail: bool = False) -> None:
        super().__init__(failing=fail)
        self.mailbox = mailbox
        self.expected = len(mailbox.messages)

    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        deadline = time.monotonic() + 10
        while sum(e.startswith("RETR") for e in self.mailbox.log) < self.expected:
            assert time.monotonic() < deadline, "the session never read every message"
            time.sleep(0.01)
        return super().announce_batch(pointers)


@pytest.mark.parametrize("delete", [True, False])
def test_identical_copies_in_one_session_are_announced_once(delete: bool) -> None:
    # Two copies of one content (no unique UIDL), read before the first copy's pointer is sent.
    mailbox = SharedUidlListing({"a": msg(1), "b": msg(1), "c": msg(2)})
    queue = QueueHeldUntilAllRead(mailbox)
    summary, _, _ = run(mailbox, queue=queue, delete=delete)
    assert sorted(p["sha256"] for p in queue.sent) == sorted(
        hashlib.sha256(m).hexdigest() for m in (msg(1), msg(2))
    )
    assert summary.stopped is StopReason.COMPLETED
    # The twin is proven by its first copy's pointer: deleted with it, or kept with it.
    assert len(mailbox.messages) == (0 if delete else 3)


def test_a_copy_whose_first_copy_fails_is_neither_announced_nor_deleted() -> None:
    mailbox = SharedUidlListing({"a": msg(1), "b": msg(1)})
    queue = QueueHeldUntilAllRead(mailbox, fail=True)
    summary, _, _ = run(mailbox, queue=queue)
    assert queue.sent == []
    assert len(mailbox.messages) == 2
    assert summary.deleted == 0
    # The session that retrieved both copies ends without QUIT.
    assert mailbox.log[: mailbox.log.index("ABANDON")] == ["RETR a", "RETR b"]


@pytest.mark.parametrize("uidl", ["../../etc/passwd", "a/b", "%2e%2e", "with space", "é"])
def test_keys_never_contain_server_text(uidl: str) -> None:
    _, store, queue = run(FakeMailbox({uidl: msg(1)}))
    (key,) = store.objects
    assert key.startswith("mail/box/")
    tail = key.removeprefix("mail/box/")
    assert tail.removesuffix(".eml").isalnum()
    assert queue.sent[0]["uidl"] == uidl


def test_failed_message_session_ends_without_quit_and_others_are_deleted_next_session() -> None:
    # Gmail marks what was retrieved in a session ending with QUIT as read:
    # a session in which a retrieved message failed must not QUIT.
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2, b"POISON"), "c": msg(3)}, pipelining=False)
    summary, _, queue = run(mailbox, FakeStore(fail_when_containing={b"POISON"}))
    assert "ABANDON" in mailbox.log
    first_quit = mailbox.log.index("QUIT")
    assert mailbox.log.index("ABANDON") < first_quit
    # The second session downloads a and c again as proof, and deletes them
    # without a second pointer.
    assert mailbox.log.count("RETR a") == 2
    assert list(mailbox.messages) == ["b"]
    assert summary.redeleted == 2
    assert len(queue.sent) == 2


def test_repeatedly_failing_message_is_quarantined_and_then_skipped() -> None:
    state = MailboxState()
    store = FakeStore(fail_when_containing={b"POISON"})
    quarantined: list[str] = []
    mailbox = FakeMailbox({"ok": msg(1), "bad": msg(2, b"POISON")})
    for attempt in range(1, 4):
        summary, _, _ = run(
            mailbox, store, state=state, quarantined=quarantined, poison_threshold=3
        )
        assert summary.quarantined == (1 if attempt == 3 else 0)
    assert quarantined == ["bad"]
    mailbox.log.clear()
    summary, _, _ = run(mailbox, store, state=state, poison_threshold=3)
    assert "RETR bad" not in mailbox.log
    assert summary.in_quarantine == 1
    assert list(mailbox.messages) == ["bad"]  # left on the server, never deleted
    assert state.release(next(iter(state.quarantined)))
    assert not state.quarantined


def test_success_resets_the_failure_count() -> None:
    state = MailboxState()
    mailbox = FakeMailbox({"flaky": msg(1, b"POISON")})
    run(mailbox, FakeStore(fail_when_containing={b"POISON"}), state=state, poison_threshold=3)
    assert sum(f.count for f in state.failures.values()) == 1
    run(mailbox, FakeStore(), state=state, poison_threshold=3)
    assert not state.failures
    assert mailbox.messages == {}


def test_keep_on_server_announces_each_message_exactly_once_across_runs() -> None:
    state = MailboxState()
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)})
    store, queue = FakeStore(), FakeQueue()
    run(mailbox, store, queue, state=state, delete=False)
    run(mailbox, store, queue, state=state, delete=False)
    assert sorted(p["uidl"] for p in queue.sent) == ["a", "b"]
    mailbox.messages["c"] = msg(3)  # arrives later: picked up once
    run(mailbox, store, queue, state=state, delete=False)
    run(mailbox, store, queue, state=state, delete=False)
    assert sorted(p["uidl"] for p in queue.sent) == ["a", "b", "c"]
    assert len(mailbox.messages) == 3
    assert mailbox.log.count("RETR a") == 1


def test_memory_of_handled_uidls_is_pruned_when_they_leave_the_server() -> None:
    state = MailboxState()
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)})
    run(mailbox, state=state, delete=False)
    assert len(state.seen) == 2
    del mailbox.messages["a"]
    run(mailbox, state=state, delete=False)
    assert len(state.seen) == 1


def test_reappearing_message_after_committed_delete_is_not_announced_again() -> None:
    state = MailboxState()
    mailbox = FakeMailbox({"a": msg(1)})
    store, queue = FakeStore(), FakeQueue()
    run(mailbox, store, queue, state=state)
    assert mailbox.messages == {}
    mailbox.messages["a"] = msg(1)  # a server whose DELE did not delete
    summary, _, _ = run(mailbox, store, queue, state=state)
    assert summary.reappeared == 1
    assert len(queue.sent) == 1  # proven the same by its digest: no second pointer
    assert mailbox.messages == {}  # and deleted again on that proof


def test_a_reused_uidl_of_the_same_size_after_a_deletion_is_new_mail() -> None:
    state = MailboxState()
    store, queue = FakeStore(), FakeQueue()
    old, new = msg(1, b"AAAA"), msg(1, b"BBBB")
    run(FakeMailbox({"a": old}), store, queue, state=state)
    summary, _, _ = run(FakeMailbox({"a": new}), store, queue, state=state)
    assert summary.reappeared == 0
    assert new in store.objects.values()
    assert hashlib.sha256(new).hexdigest() in {p["sha256"] for p in queue.sent}


def test_after_a_lost_connection_announced_messages_are_deleted_without_a_second_pointer() -> None:
    state = MailboxState()
    mailbox = FakeMailbox(
        {"a": msg(1), "b": msg(2), "c": msg(3)}, cut_retr={"c": 5}, pipelining=False
    )
    store, queue = FakeStore(), FakeQueue()
    first, _, _ = run(mailbox, store, queue, state=state)
    assert first.abandoned_sessions >= 1
    assert first.redeleted == first.announced  # proven in a new session, not re-announced
    mailbox.cut_retr.clear()
    run(mailbox, store, queue, state=state)
    assert mailbox.messages == {}
    assert sorted(p["uidl"] for p in queue.sent) == ["a", "b", "c"]  # no duplicates


def test_a_capped_listing_is_followed_by_another_session() -> None:
    class CappedListing(FakeMailbox):
        """Lists at most 250 messages per session, as Gmail does."""

        def list_messages(self) -> list[ServerMessage]:
            listing = super().list_messages()[:250]
            self._numbers = {m.number: m.uidl for m in listing}
            return listing

    mailbox = CappedListing({f"u{i}": msg(i) for i in range(600)})
    summary, _, _ = run(mailbox)
    assert mailbox.messages == {}
    assert summary.deleted == 600
    assert summary.sessions == 3  # 250 + 250 + 100: a short listing means the end


def test_sessions_are_committed_after_a_time_limit() -> None:
    mailbox = mailbox_of(5)
    summary, _, _ = run(mailbox, commit_every_seconds=0.0)
    assert summary.sessions >= 2
    assert summary.deleted == 5


def test_messages_sharing_a_uidl_are_all_reached_across_committed_sessions() -> None:
    mailbox = SharedUidlListing({f"m{i}": msg(i) for i in range(7)})
    queue = FakeQueue()
    summary, _, _ = run(mailbox, queue=queue, delete=False, commit_every_messages=2)
    assert len({p["sha256"] for p in queue.sent}) == 7
    assert summary.sessions >= 4
