"""start "now": the mail on the server at the mailbox's first run is left alone for good.

The plan with plain inputs, then the core (MailboxIngest) over the in-memory
POP3 server, store and queue.
"""

from __future__ import annotations

import hashlib

from pop3_ingest.config import Start
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.ledger import RunSoFar
from pop3_ingest.domain.message import ServerMessage, failure_key, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.plan import Skip, baseline, first_look, listing_keys, plan_session
from pop3_ingest.domain.state import Deleted, Failure, MailboxState, Seen
from pop3_ingest.domain.summary import RunSummary

from ..fakes import FakeMailbox, FakeQueue, FakeStore, SharedUidlListing

NOW = IngestOptions(start=Start.NOW, capped_listing=100)
SHA = "a" * 64


def listing(*sizes: int) -> list[ServerMessage]:
    return [ServerMessage(n, f"u{n}", size) for n, size in enumerate(sizes, start=1)]


def shared(*sizes: int) -> list[ServerMessage]:
    """A server without UIDL: messages known by their size and place only."""
    return [ServerMessage(n, "", size, unique=False) for n, size in enumerate(sizes, start=1)]


def skips(plan_skips: tuple[tuple[ServerMessage, Skip], ...]) -> dict[int, Skip]:
    return {message.number: reason for message, reason in plan_skips}


def taken_as_baseline(messages: list[ServerMessage]) -> MailboxState:
    state = MailboxState()
    state.take_baseline(baseline(messages, state), 1_000.0)
    return state


# -- the plan ----------------------------------------------------------------------


def test_the_baseline_holds_every_listed_message_the_state_does_not_know() -> None:
    messages = listing(10, 20, 30, 40)
    state = MailboxState()
    state.seen[uidl_digest("u1")] = Seen(10, SHA)
    state.deleted[uidl_digest("u2")] = Deleted(1.0, 20, SHA)
    state.quarantined[failure_key(messages[2])] = Failure(3, "boom", 1.0, 1.0)
    # Announced, deleted and quarantined messages keep their own rules.
    assert baseline(messages, state) == {uidl_digest("u4"): 40}


def test_mail_in_the_baseline_is_left_alone_and_later_mail_is_taken() -> None:
    old = listing(10, 20)
    state = taken_as_baseline(old)
    later = [*old, ServerMessage(3, "u3", 30)]
    plan = plan_session(later, state, NOW, RunSoFar())
    assert plan.to_fetch == (later[2],)
    assert skips(plan.skipped) == {1: Skip.BASELINE, 2: Skip.BASELINE}
    assert not plan.prove


def test_with_start_all_the_baseline_holds_nothing_back() -> None:
    old = listing(10, 20)
    state = taken_as_baseline(old)
    plan = plan_session(old, state, IngestOptions(start=Start.ALL), RunSoFar())
    assert plan.to_fetch == tuple(old)


def test_a_baseline_uidl_listed_with_another_size_is_new_mail() -> None:
    state = taken_as_baseline(listing(10))
    reused = ServerMessage(1, "u1", 11)
    assert plan_session([reused], state, NOW, RunSoFar()).to_fetch == (reused,)


def test_a_capped_listing_of_baseline_mail_is_not_taken_anyway() -> None:
    old = listing(10, 20, 30, 40)
    state = taken_as_baseline(old)
    plan = plan_session(old, state, IngestOptions(start=Start.NOW, capped_listing=4), RunSoFar())
    assert plan.to_fetch == ()
    assert plan.retry_alone == frozenset()


def test_without_uidls_the_baseline_counts_the_messages_alike_in_listing_order() -> None:
    state = taken_as_baseline(shared(100, 100, 200))
    later = shared(100, 100, 200, 100)  # one more of 100 bytes, listed last
    plan = plan_session(later, state, NOW, RunSoFar())
    assert plan.to_fetch == (later[3],)
    assert skips(plan.skipped) == {1: Skip.BASELINE, 2: Skip.BASELINE, 3: Skip.BASELINE}


def test_a_baseline_message_gone_from_a_complete_listing_is_forgotten() -> None:
    old = shared(100, 100, 200)
    state = taken_as_baseline(old)
    remaining = shared(100, 200)  # one of the two 100-byte messages was deleted elsewhere
    look = first_look(remaining, 0, NOW)
    state.forget_absent(set(look.present), 2_000.0, complete=look.complete)
    assert len(state.baseline) == 2
    # New mail of the same size is no longer hidden behind the one that left.
    later = shared(100, 200, 100)
    assert plan_session(later, state, NOW, RunSoFar()).to_fetch == (later[2],)


def test_a_capped_listing_forgets_nothing_of_the_baseline() -> None:
    state = taken_as_baseline(listing(10, 20, 30))
    look = first_look(listing(10), 0, IngestOptions(capped_listing=1))
    state.forget_absent(set(look.present), 2_000.0, complete=look.complete)
    assert len(state.baseline) == 3


def test_listing_keys_name_unique_uidls_as_the_state_does() -> None:
    keys = listing_keys([ServerMessage(1, "u1", 10), *shared(5, 5)])
    assert keys[0] == uidl_digest("u1")
    assert len(set(keys)) == 3


# -- the core ----------------------------------------------------------------------


def msg(i: int) -> bytes:
    return f"Subject: message {i}\r\nMessage-ID: <{i}@test>\r\n\r\nbody {i}\r\n".encode()


def run(
    mailbox: FakeMailbox, state: MailboxState, **options: object
) -> tuple[RunSummary, FakeQueue]:
    queue = FakeQueue()
    ingest = MailboxIngest(
        mailbox_name="box",
        connect=lambda: mailbox,
        store=FakeStore(),
        announcer=queue,
        deadline=Deadline(lambda: 600_000, margin_seconds=10),
        options=IngestOptions(**options),  # type: ignore[arg-type]
        state=state,
    )
    return ingest.run(), queue


def test_the_first_run_downloads_announces_and_deletes_nothing() -> None:
    mailbox = FakeMailbox({f"old{i}": msg(i) for i in range(3)})
    state = MailboxState()
    summary, queue = run(mailbox, state, start=Start.NOW)
    assert not any(entry.startswith(("RETR", "DELE")) for entry in mailbox.log)
    assert queue.sent == []
    assert summary.deleted == summary.stored == 0
    assert list(mailbox.messages) == ["old0", "old1", "old2"]
    assert len(state.baseline) == 3
    assert state.baseline_at > 0


def test_later_runs_take_only_later_mail_and_never_touch_the_old() -> None:
    mailbox = FakeMailbox({f"old{i}": msg(i) for i in range(3)})
    state = MailboxState()
    run(mailbox, state, start=Start.NOW)
    taken_at = state.baseline_at
    mailbox.messages["new"] = msg(9)
    summary, queue = run(mailbox, state, start=Start.NOW)
    assert [p["uidl"] for p in queue.sent] == ["new"]
    assert summary.deleted == 1
    assert list(mailbox.messages) == ["old0", "old1", "old2"]
    assert not any(entry.endswith(("old0", "old1", "old2")) for entry in mailbox.log[1:])
    assert state.baseline_at == taken_at  # taken once


def test_without_uidls_old_mail_is_left_and_later_mail_taken() -> None:
    mailbox = SharedUidlListing({f"old{i}": msg(i) for i in range(2)})
    state = MailboxState()
    run(mailbox, state, start=Start.NOW)
    mailbox.messages["new"] = msg(7)
    summary, queue = run(mailbox, state, start=Start.NOW)
    assert len(queue.sent) == 1
    assert summary.deleted == 1
    assert list(mailbox.messages) == ["old0", "old1"]


def test_switching_to_start_all_takes_the_old_mail_after_all() -> None:
    mailbox = FakeMailbox({f"old{i}": msg(i) for i in range(2)})
    state = MailboxState()
    run(mailbox, state, start=Start.NOW)
    summary, queue = run(mailbox, state, start=Start.ALL)
    assert summary.deleted == 2
    assert len(queue.sent) == 2
    assert state.baseline == {}
    assert state.baseline_at == 0


def test_a_lost_state_takes_a_new_baseline_of_whatever_is_listed_then() -> None:
    mailbox = FakeMailbox({"old": msg(1)})
    run(mailbox, MailboxState(), start=Start.NOW)
    mailbox.messages["arrived"] = msg(2)
    summary, queue = run(mailbox, MailboxState(), start=Start.NOW)  # the state was lost
    assert queue.sent == []
    assert summary.deleted == 0
    assert list(mailbox.messages) == ["old", "arrived"]


def test_start_now_after_start_all_keeps_proving_what_was_announced() -> None:
    mailbox = FakeMailbox({"announced": msg(1), "waiting": msg(2)})
    state = MailboxState()
    state.seen[uidl_digest("announced")] = Seen(len(msg(1)), hashlib.sha256(msg(1)).hexdigest())
    summary, queue = run(mailbox, state, start=Start.NOW)
    # Announced before: proven and deleted without a second pointer; the rest is left.
    assert summary.redeleted == 1
    assert queue.sent == []
    assert list(mailbox.messages) == ["waiting"]
