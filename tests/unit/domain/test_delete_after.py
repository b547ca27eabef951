"""delete_after_days: announced once when first seen, deleted N days later on proof.

The plan with plain inputs and an explicit clock, then the core (MailboxIngest)
over the in-memory POP3 server, store and queue, with the clock the core reads
(``time.time``) moved forward.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.ledger import RunSoFar
from pop3_ingest.domain.message import ServerMessage, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.plan import Skip, plan_session
from pop3_ingest.domain.state import MailboxState, Seen
from pop3_ingest.domain.summary import RunSummary

from ..fakes import FakeMailbox, FakeQueue, FakeStore, SharedUidlListing

DAY = 24 * 3600
T0 = 1_800_000_000.0
KEEP_3 = IngestOptions(delete_after_days=3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def announced_at(at: float) -> tuple[ServerMessage, MailboxState]:
    message = ServerMessage(1, "u1", 10)
    state = MailboxState()
    state.seen[uidl_digest("u1")] = Seen(10, "a" * 64, at)
    return message, state


# -- the plan ----------------------------------------------------------------------


def test_a_message_younger_than_n_days_is_kept() -> None:
    message, state = announced_at(T0)
    plan = plan_session([message], state, KEEP_3, RunSoFar(), now=T0 + 3 * DAY - 1)
    assert plan.to_fetch == ()
    assert dict((m.uidl, why) for m, why in plan.skipped) == {"u1": Skip.KEPT}


def test_a_message_n_days_old_is_proven_before_its_deletion() -> None:
    message, state = announced_at(T0)
    plan = plan_session([message], state, KEEP_3, RunSoFar(), now=T0 + 3 * DAY)
    assert plan.to_fetch == (message,)
    assert plan.prove == {"u1": "a" * 64}
    assert plan.prove_only  # due deletions first, in a session of their own


def test_without_delete_after_days_an_announced_message_is_proven_at_once() -> None:
    message, state = announced_at(T0)
    plan = plan_session([message], state, IngestOptions(), RunSoFar(), now=T0)
    assert plan.prove == {"u1": "a" * 64}


def test_the_options_delete_at_once_only_what_cannot_be_remembered() -> None:
    unique, shared = ServerMessage(1, "u1", 10), ServerMessage(2, "", 10, unique=False)
    assert not KEEP_3.deletes_when_stored(unique)
    assert KEEP_3.deletes_when_stored(shared)
    assert IngestOptions().deletes_when_stored(unique)
    assert not IngestOptions(delete=False).deletes_when_stored(shared)


# -- the core ----------------------------------------------------------------------


def msg(i: int, body: str = "") -> bytes:
    return f"Subject: message {i}\r\nMessage-ID: <{i}@test>\r\n\r\nbody {i}{body}\r\n".encode()


class Clock:
    """``time.time`` as the core reads it, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)

    def forward(self, days: float) -> None:
        self.offset += days * DAY


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def run(
    mailbox: FakeMailbox, state: MailboxState, store: FakeStore | None = None, days: int = 3
) -> tuple[RunSummary, FakeQueue]:
    queue = FakeQueue()
    ingest = MailboxIngest(
        mailbox_name="box",
        connect=lambda: mailbox,
        store=store or FakeStore(),
        announcer=queue,
        deadline=Deadline(lambda: 600_000, margin_seconds=10),
        options=IngestOptions(delete_after_days=days),
        state=state,
    )
    return ingest.run(), queue


def test_mail_is_announced_once_when_first_seen_and_kept(clock: Clock) -> None:
    mailbox = FakeMailbox({"a": msg(1), "b": msg(2)})
    state = MailboxState()
    summary, queue = run(mailbox, state)
    assert sorted(p["uidl"] for p in queue.sent) == ["a", "b"]
    assert summary.deleted == 0
    assert not any(entry.startswith("DELE") for entry in mailbox.log)
    clock.forward(2.9)
    mailbox.log.clear()
    summary, queue = run(mailbox, state)
    assert queue.sent == []  # not announced again
    assert summary.deleted == 0
    assert mailbox.log == ["QUIT"]  # not even downloaded again
    assert list(mailbox.messages) == ["a", "b"]


def test_after_n_days_a_message_is_proven_then_deleted_without_a_second_pointer(
    clock: Clock,
) -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    store, state = FakeStore(), MailboxState()
    run(mailbox, state, store)
    mailbox.messages["b"] = msg(2)
    clock.forward(3)
    mailbox.log.clear()
    summary, queue = run(mailbox, state, store)
    # a: due, downloaded again and proven; b: new, announced and kept.
    assert mailbox.log.index("RETR a") < mailbox.log.index("DELE a")
    assert summary.redeleted == summary.deleted == 1
    assert [p["uidl"] for p in queue.sent] == ["b"]
    assert list(mailbox.messages) == ["b"]
    assert uidl_digest("a") in state.deleted
    assert uidl_digest("a") not in state.seen


def test_a_due_message_whose_bytes_changed_is_stored_as_new_and_kept(clock: Clock) -> None:
    mailbox = FakeMailbox({"a": msg(1, "x")})
    state = MailboxState()
    run(mailbox, state)
    first = state.seen[uidl_digest("a")]
    mailbox.messages["a"] = msg(1, "y")  # same UIDL and size, other bytes
    clock.forward(3)
    summary, queue = run(mailbox, state)
    assert summary.deleted == 0
    assert [p["sha256"] for p in queue.sent] == [sha(msg(1, "y"))]
    assert "a" in mailbox.messages
    again = state.seen[uidl_digest("a")]
    assert again.sha256 == sha(msg(1, "y"))
    assert again.at >= first.at + 3 * DAY  # its N days start again


def test_messages_without_a_unique_uidl_are_deleted_once_stored() -> None:
    mailbox = SharedUidlListing({"a": msg(1), "b": msg(2)})
    summary, queue = run(mailbox, MailboxState())
    assert len(queue.sent) == 2
    assert summary.deleted == 2
    assert mailbox.messages == {}


def test_announced_messages_of_unknown_age_are_dated_by_the_next_run(clock: Clock) -> None:
    mailbox = FakeMailbox({"a": msg(1)})
    state = MailboxState()
    # Remembered by a version 4 state, which did not keep when.
    state.seen[uidl_digest("a")] = Seen(len(msg(1)), sha(msg(1)), at=0.0)
    summary, _ = run(mailbox, state)
    assert summary.deleted == 0
    assert state.seen[uidl_digest("a")].at == pytest.approx(time.time(), abs=5)
    clock.forward(3)
    assert run(mailbox, state)[0].deleted == 1
