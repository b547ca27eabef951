"""The run's ledger: what sessions hand on to each other, and the failure policy."""

from __future__ import annotations

from pop3_ingest.domain.ledger import RunLedger
from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.state import Failure, MailboxState
from pop3_ingest.domain.summary import RunSummary
from pop3_ingest.errors import StoreError

THRESHOLD = 3
UNIQUE = ServerMessage(1, "u1", 10)
SHARED = ServerMessage(2, "same", 10, unique=False)


def ledger(state: MailboxState | None = None, told: list[ServerMessage] | None = None) -> RunLedger:
    def on_quarantine(message: ServerMessage, failure: Failure) -> None:
        if told is not None:
            told.append(message)

    return RunLedger(RunSummary(mailbox="box"), state or MailboxState(), THRESHOLD, on_quarantine)


def test_what_a_session_takes_is_known_to_the_next_until_given_back() -> None:
    run = ledger()
    run.take(UNIQUE)
    run.take(SHARED)
    run.take(SHARED)
    so_far = run.so_far()
    assert UNIQUE.uidl in so_far.handled
    assert so_far.shared_taken[failure_key(SHARED)] == 2
    assert run.taken == 3
    run.give_back(UNIQUE)
    run.give_back(SHARED)
    so_far = run.so_far()
    assert UNIQUE.uidl not in so_far.handled
    assert so_far.shared_taken[failure_key(SHARED)] == 1


def test_a_snapshot_does_not_change_with_the_ledger() -> None:
    run = ledger()
    before = run.so_far()
    run.take(UNIQUE)
    run.remember(handled=["x"], reproved=["y"], retried=["z"])
    assert before.handled == frozenset()
    after = run.so_far()
    assert {"x", UNIQUE.uidl} <= after.handled
    assert after.reproved == {"y"}
    assert after.retried == {"z"}


def test_repeated_failures_quarantine_a_message_and_tell_once() -> None:
    state, told = MailboxState(), list[ServerMessage]()
    for attempt in range(1, THRESHOLD + 1):
        run = ledger(state, told)  # one run per attempt: failures in a row across runs
        run.fail(UNIQUE, "boom")
        assert (failure_key(UNIQUE) in state.quarantined) == (attempt == THRESHOLD)
    assert told == [UNIQUE]
    assert run.summary.quarantined == 1
    assert failure_key(UNIQUE) in run.so_far().quarantined_now


def test_a_failure_that_is_not_the_messages_fault_is_reported_not_counted() -> None:
    state = MailboxState()
    run = ledger(state)
    for _ in range(THRESHOLD + 1):
        run.fail(UNIQUE, "queue down", poison=False)
    assert run.summary.failed == THRESHOLD + 1
    assert not state.failures
    assert not state.quarantined


def test_a_quarantined_message_failing_again_stays_quarantined_with_its_count_updated() -> None:
    state, told = MailboxState(), list[ServerMessage]()
    state.quarantined[failure_key(UNIQUE)] = Failure(THRESHOLD, "old", 1.0, 1.0)
    run = ledger(state, told)
    run.fail(UNIQUE, "new")
    held = state.quarantined[failure_key(UNIQUE)]
    assert held.count == THRESHOLD + 1
    assert held.error == "new"
    assert told == []  # not quarantined anew
    assert run.summary.quarantined == 0


def test_a_quarantine_record_that_cannot_be_written_does_not_stop_the_run() -> None:
    def failing_hook(message: ServerMessage, failure: Failure) -> None:
        raise StoreError("S3 said no")

    state = MailboxState()
    run = RunLedger(RunSummary(mailbox="box"), state, 1, failing_hook)
    run.fail(UNIQUE, "boom")
    assert failure_key(UNIQUE) in state.quarantined


def test_the_summary_keeps_a_bounded_list_of_failures() -> None:
    run = ledger()
    for number in range(100):
        run.fail(ServerMessage(number, f"u{number}", 10), "x" * 1000, poison=False)
    assert run.summary.failed == 100
    assert 0 < len(run.summary.failures) < 100
    assert all(len(entry["error"]) < 1000 for entry in run.summary.failures)


def test_the_queue_is_down_after_failures_in_a_row_and_up_on_an_answer() -> None:
    run = ledger()
    for _ in range(10):
        if run.queue_down:
            break
        run.queue_failed()
    assert run.queue_down
    run.queue_answered()
    assert not run.queue_down
    run.queue_failed()
    assert not run.queue_down  # one failure is a message's bad luck, not the queue
