"""The session plan: a listing weighed against the state, with plain in-memory inputs."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter

from pop3_ingest.domain.ledger import RunSoFar
from pop3_ingest.domain.message import ServerMessage, failure_key, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.plan import Skip, first_look, plan_session
from pop3_ingest.domain.state import Deleted, Failure, MailboxState, Seen

OPTIONS = IngestOptions(max_message_size=1000, spool_budget=5000, capped_listing=4)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def listing(*sizes: int, prefix: str = "u") -> list[ServerMessage]:
    return [ServerMessage(n, f"{prefix}{n}", size) for n, size in enumerate(sizes, start=1)]


def shared(count: int, size: int = 100) -> list[ServerMessage]:
    """Messages whose UIDLs do not tell them apart."""
    return [ServerMessage(n, "same", size, unique=False) for n in range(1, count + 1)]


def seen(state: MailboxState, message: ServerMessage, size: int | None = None) -> str:
    digest = sha(message.uidl)
    state.seen[uidl_digest(message.uidl)] = Seen(size=size or message.size, sha256=digest)
    return digest


def deleted(state: MailboxState, message: ServerMessage, size: int | None = None) -> str:
    digest = sha(message.uidl)
    entry = Deleted(at=1.0, size=size or message.size, sha256=digest)
    state.deleted[uidl_digest(message.uidl)] = entry
    return digest


def quarantine(state: MailboxState, message: ServerMessage) -> None:
    state.quarantined[failure_key(message)] = Failure(3, "boom", 1.0, 1.0)


def skipped(plan_skips: tuple[tuple[ServerMessage, Skip], ...]) -> dict[str, Skip]:
    return {message.uidl: reason for message, reason in plan_skips}


def test_new_mail_is_fetched_in_listing_order() -> None:
    messages = listing(10, 20, 30)
    plan = plan_session(messages, MailboxState(), OPTIONS, RunSoFar())
    assert plan.to_fetch == tuple(messages)
    assert not plan.prove
    assert not plan.skipped
    assert not plan.prove_only


def test_a_quarantined_message_is_skipped_and_counted() -> None:
    messages = listing(10, 20)
    state = MailboxState()
    quarantine(state, messages[0])
    plan = plan_session(messages, state, OPTIONS, RunSoFar())
    assert plan.to_fetch == (messages[1],)
    assert skipped(plan.skipped) == {"u1": Skip.QUARANTINED}
    assert plan.quarantined == (messages[0],)


def test_an_oversized_message_is_skipped_counted_and_handled_for_the_run() -> None:
    messages = listing(OPTIONS.max_message_size + 1, 20)
    plan = plan_session(messages, MailboxState(), OPTIONS, RunSoFar())
    assert plan.to_fetch == (messages[1],)
    assert skipped(plan.skipped) == {"u1": Skip.OVERSIZED}
    assert plan.oversized == (messages[0],)
    assert "u1" in plan.handled


def test_a_message_taken_earlier_in_the_run_is_skipped() -> None:
    messages = listing(10, 20)
    plan = plan_session(messages, MailboxState(), OPTIONS, RunSoFar(handled=frozenset({"u1"})))
    assert plan.to_fetch == (messages[1],)
    assert skipped(plan.skipped) == {"u1": Skip.TAKEN}


def test_a_reappearing_deletion_is_proven_once_per_run() -> None:
    (message,) = listing(10)
    state = MailboxState()
    digest = deleted(state, message)
    plan = plan_session([message], state, OPTIONS, RunSoFar())
    assert plan.to_fetch == (message,)
    assert plan.prove == {"u1": digest}
    assert plan.reappearing == {"u1"}
    assert plan.reproved == {"u1"}
    later = plan_session([message], state, OPTIONS, RunSoFar(reproved=plan.reproved))
    assert later.to_fetch == ()
    assert skipped(later.skipped) == {"u1": Skip.PROVEN}


def test_a_stored_and_announced_message_is_proven_once_per_run_before_its_dele() -> None:
    (message,) = listing(10)
    state = MailboxState()
    digest = seen(state, message)
    plan = plan_session([message], state, OPTIONS, RunSoFar())
    assert plan.prove == {"u1": digest}
    assert plan.reappearing == frozenset()
    assert plan.to_fetch == (message,)
    taken = RunSoFar(reproved=frozenset({"u1"}), handled=frozenset({"u1"}))
    assert plan_session([message], state, OPTIONS, taken).to_fetch == ()


def test_in_keep_mode_a_message_announced_before_is_skipped() -> None:
    (message,) = listing(10)
    state = MailboxState()
    seen(state, message)
    plan = plan_session([message], state, IngestOptions(delete=False), RunSoFar())
    assert plan.to_fetch == ()
    assert skipped(plan.skipped) == {"u1": Skip.KEPT}


def test_a_reused_uidl_with_another_size_is_new_mail() -> None:
    remembered, fresh = listing(10, 20)
    state = MailboxState()
    seen(state, remembered, size=11)
    deleted(state, fresh, size=21)
    plan = plan_session([remembered, fresh], state, OPTIONS, RunSoFar())
    assert plan.to_fetch == (remembered, fresh)
    assert not plan.prove
    # The stale memory of the other message is for the caller to drop.
    assert plan.drop_seen == (uidl_digest("u1"),)


def test_shared_uidls_are_taken_up_to_the_count_taken_earlier_in_the_run() -> None:
    messages = shared(3)
    so_far = RunSoFar(shared_taken=Counter({failure_key(messages[0]): 2}))
    plan = plan_session(messages, MailboxState(), OPTIONS, so_far)
    assert plan.to_fetch == (messages[2],)
    assert [reason for _, reason in plan.skipped] == [Skip.TAKEN, Skip.TAKEN]


def test_a_shared_uidl_too_big_is_skipped() -> None:
    messages = shared(2, size=OPTIONS.max_message_size + 1)
    plan = plan_session(messages, MailboxState(), OPTIONS, RunSoFar())
    assert plan.to_fetch == ()
    assert len(plan.oversized) == 2


def blocked_window() -> tuple[list[ServerMessage], MailboxState]:
    """A capped listing whose every message is skipped: two quarantined, two oversized."""
    big = OPTIONS.max_message_size + 1
    messages = listing(10, 20, big, big)
    state = MailboxState()
    quarantine(state, messages[0])
    quarantine(state, messages[1])
    return messages, state


def test_a_capped_listing_all_skipped_is_retried_alone_once_per_run() -> None:
    messages, state = blocked_window()
    plan = plan_session(messages, state, OPTIONS, RunSoFar())
    assert plan.to_fetch == tuple(messages)
    assert plan.retry_alone == {m.number for m in messages}
    assert plan.retried == {failure_key(m) for m in messages}
    assert plan.skipped == ()
    # Counted as listed all the same.
    assert len(plan.quarantined) == len(plan.oversized) == 2
    again = plan_session(messages, state, OPTIONS, RunSoFar(retried=plan.retried))
    assert again.to_fetch == ()
    assert again.retry_alone == frozenset()


def test_a_blocked_window_leaves_out_what_this_run_quarantined_or_cannot_spool() -> None:
    messages, state = blocked_window()
    huge = ServerMessage(5, "huge", OPTIONS.spool_budget + 1)
    so_far = RunSoFar(quarantined_now=frozenset({failure_key(messages[0])}))
    plan = plan_session([*messages, huge], state, OPTIONS, so_far)
    assert plan.to_fetch == tuple(messages[1:4])
    assert skipped(plan.skipped) == {"u1": Skip.QUARANTINED, "huge": Skip.OVERSIZED}


def test_a_short_listing_all_skipped_is_not_retried() -> None:
    messages, state = blocked_window()
    plan = plan_session(messages[:2], state, OPTIONS, RunSoFar())
    assert plan.to_fetch == ()
    assert plan.retry_alone == frozenset()


def test_proofs_go_first_in_a_session_of_their_own() -> None:
    messages = listing(10, 20, 30)
    state = MailboxState()
    seen(state, messages[1])
    plan = plan_session(messages, state, OPTIONS, RunSoFar())
    assert plan.prove_only
    assert plan.to_fetch == (messages[1],)


def test_with_a_login_delay_proofs_and_new_mail_share_the_session() -> None:
    messages = listing(10, 20, 30)
    state = MailboxState()
    seen(state, messages[1])
    plan = plan_session(messages, state, OPTIONS, RunSoFar(), login_delay=300)
    assert not plan.prove_only
    assert plan.to_fetch == tuple(messages)


def test_planning_changes_nothing_it_is_given() -> None:
    messages = listing(10, 20, OPTIONS.max_message_size + 1, 40)
    state = MailboxState()
    seen(state, messages[0], size=99)  # a reused UIDL
    deleted(state, messages[1])
    quarantine(state, messages[3])
    so_far = RunSoFar(shared_taken=Counter({"k": 1}))
    before = (copy.deepcopy(state), copy.deepcopy(so_far))
    plan = plan_session(messages, state, OPTIONS, so_far)
    assert plan.drop_seen
    assert (state, so_far) == before


def test_the_first_look_counts_the_server_and_a_capped_listing_proves_nothing_gone() -> None:
    short = first_look(listing(10, 20), unlisted=1, options=OPTIONS)
    assert short.messages_on_server == 3
    assert short.unlisted == 1
    assert short.complete
    capped = first_look(listing(*[10] * OPTIONS.capped_listing), unlisted=0, options=OPTIONS)
    assert not capped.complete


def test_the_first_look_names_every_listed_message_as_present() -> None:
    messages = [*listing(10, 20), *shared(1)]
    look = first_look(messages, unlisted=0, options=OPTIONS)
    for message in messages:
        assert failure_key(message) in look.present
    assert uidl_digest("u1") in look.present
