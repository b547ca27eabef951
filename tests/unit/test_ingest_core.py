"""The delete-after-store rule and the run policy, with in-memory fakes."""

from __future__ import annotations

import hashlib

import pytest

from pop3_ingest.ingest import Deadline, MailboxIngest, StopReason
from pop3_ingest.pop3 import ServerMessage

from .fakes import FakeMailbox, FakeQueue, FakeStore


def msg(i: int, extra: bytes = b"") -> bytes:
    return f"Subject: message {i}\r\nMessage-ID: <{i}@test>\r\n\r\nbody {i}\r\n".encode() + extra


def make_run(
    mailbox: FakeMailbox,
    store: FakeStore | None = None,
    queue: FakeQueue | None = None,
    *,
    delete: bool = True,
    remaining_ms: int = 600_000,
    max_messages: int = 0,
) -> tuple[MailboxIngest, FakeStore, FakeQueue]:
    store = store or FakeStore()
    queue = queue or FakeQueue()
    run = MailboxIngest(
        mailbox_name="box",
        mailbox=mailbox,
        store=store,
        announcer=queue,
        key_prefix="mail/",
        delete=delete,
        deadline=Deadline(lambda: remaining_ms, margin_seconds=10),
        max_messages=max_messages,
    )
    return run, store, queue


def test_every_message_is_stored_announced_then_deleted_in_that_order() -> None:
    log: list[str] = []
    mailbox = FakeMailbox({f"u{i}": msg(i) for i in range(3)}, log=log)
    run, store, _queue = make_run(mailbox, FakeStore(log=log), FakeQueue(log=log))
    summary = run.run()

    assert summary.stored == 3
    assert summary.deleted == 3
    assert summary.stopped is StopReason.COMPLETED
    for uidl in ("u0", "u1", "u2"):
        retr = log.index(f"RETR {uidl}")
        put = next(i for i, e in enumerate(log) if e.startswith("PUT") and i > retr)
        send = log.index(f"SEND {uidl}")
        dele = log.index(f"DELE {uidl}")
        assert retr < put < send < dele
    assert sorted(store.objects.values()) == sorted(mailbox.messages.values())


def test_pointer_carries_digest_size_and_headers() -> None:
    body = msg(7)
    run, store, queue = make_run(FakeMailbox({"abc": body}))
    run.run()
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
    run, _store, queue = make_run(mailbox, FakeStore(fail_keys_containing={b"POISON"}))
    summary = run.run()
    mailbox.commit()
    assert list(mailbox.messages) == ["b"]
    assert summary.failed == 1
    assert summary.deleted == 2
    assert [p["uidl"] for p in queue.sent] == ["a", "c"]


def test_queue_failure_deletes_nothing_and_stops_early() -> None:
    mailbox = FakeMailbox({f"u{i}": msg(i) for i in range(5)})
    run, store, _ = make_run(mailbox, queue=FakeQueue(failing=True))
    summary = run.run()
    assert "DELE" not in " ".join(mailbox.log)
    assert summary.deleted == 0
    assert summary.stopped is StopReason.QUEUE_UNAVAILABLE
    # Stored objects stay (a re-run finds them and does not write twice).
    assert len(store.objects) == 2


def test_connection_cut_mid_message_ends_run_without_deleting_that_message() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2), "c": msg(3)}, cut_retr={"b": 10})
    run, store, _queue = make_run(mailbox)
    summary = run.run()
    assert summary.stopped is StopReason.CONNECTION_LOST
    assert mailbox.log == ["RETR a", "DELE a", "RETR b"]
    assert len(store.objects) == 1  # the partial message was never committed


def test_rerun_after_crash_does_not_store_twice() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)})
    store = FakeStore()
    first, _, _ = make_run(mailbox, store)
    first.run()
    # Crash before QUIT: the server forgets the DELEs.
    mailbox.marked.clear()
    second, _, queue = make_run(mailbox, store)
    summary = second.run()
    mailbox.commit()
    assert summary.stored == 0
    assert summary.already_stored == 2
    assert len(store.objects) == 2
    assert mailbox.messages == {}
    assert len(queue.sent) == 2


def test_reused_uidl_with_different_content_is_kept_under_another_key() -> None:
    store = FakeStore()
    first, _, _ = make_run(FakeMailbox({"same": msg(1)}), store)
    first.run()
    mailbox = FakeMailbox({"same": msg(2, b"different and longer")})
    second, _, queue = make_run(mailbox, store)
    summary = second.run()
    assert summary.stored == 1
    assert len(store.objects) == 2
    assert queue.sent[0]["key"].endswith(queue.sent[0]["sha256"][:16] + ".eml")


def test_refused_retr_skips_only_that_message() -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)}, refuse_retr={"a"})
    run, _, queue = make_run(mailbox)
    summary = run.run()
    assert summary.failed == 1
    assert [p["uidl"] for p in queue.sent] == ["b"]


def test_keep_on_server_mode_never_deletes() -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    run, _store, _ = make_run(mailbox, delete=False)
    summary = run.run()
    assert summary.stored == 1
    assert summary.deleted == 0
    assert "DELE a" not in mailbox.log


def test_message_cap_stops_run() -> None:
    mailbox = FakeMailbox({f"u{i}": msg(i) for i in range(5)})
    run, _store, _ = make_run(mailbox, max_messages=2)
    summary = run.run()
    assert summary.stopped is StopReason.MESSAGE_CAP
    assert summary.stored == 2


def test_deadline_too_close_takes_nothing() -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    run, store, _ = make_run(mailbox, remaining_ms=5_000)  # margin is 10 s
    summary = run.run()
    assert summary.stopped is StopReason.DEADLINE
    assert store.objects == {}
    assert mailbox.log == []


def test_deadline_skips_big_message_when_throughput_says_it_cannot_finish() -> None:
    deadline = Deadline(lambda: 30_000, margin_seconds=10, bytes_per_second=1_000_000)
    assert deadline.allows(1_000)
    assert not deadline.allows(50_000_000)
    deadline.observe(10_000_000, 1.0)  # the line turned out fast
    assert deadline.bytes_per_second > 1_000_000


def test_duplicate_uidl_in_listing_leaves_the_twin_for_next_run() -> None:
    class TwinListing(FakeMailbox):
        def list_messages(self) -> list[ServerMessage]:
            (first,) = super().list_messages()
            return [first, ServerMessage(number=2, uidl=first.uidl, size=first.size)]

    mailbox = TwinListing({"a": msg(1)})
    run, _, queue = make_run(mailbox)
    summary = run.run()
    assert summary.failed == 1
    assert summary.deleted == 1
    assert mailbox.log == ["RETR a", "DELE a"]
    assert len(queue.sent) == 1


@pytest.mark.parametrize("uidl", ["../../etc/passwd", "a/b", "%2e%2e", "with space", "é"])
def test_keys_never_contain_server_text(uidl: str) -> None:
    run, store, queue = make_run(FakeMailbox({uidl: msg(1)}))
    run.run()
    (key,) = store.objects
    assert key.startswith("mail/box/")
    tail = key.removeprefix("mail/box/")
    assert tail.removesuffix(".eml").isalnum()
    assert queue.sent[0]["uidl"] == uidl
