"""Answers that never end and servers that drip: bounded memory, bounded time, clear errors.

No test measures memory or time: each asserts that the run ends with the error
that names the limit. The limits are configured small so that every test is
quick (POP3_TIMEOUT_SECONDS=1, a small listing cap).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from tests.support.corpus import simple_message
from tests.support.fake_pop3 import FakeMessage, Fault, endless_line, endless_lines
from tests.support.harness import AFTER_A_BROKEN_MESSAGE, HostileHarness, messages

from pop3_ingest.errors import ConnectError, ConnectionLost
from pop3_ingest.pop3 import listing
from pop3_ingest.pop3.retr_stream import allowed_size

pytestmark = pytest.mark.integration

LOST = "connection lost; no deletion of this session counts"


def after(start: bytes, endless: Iterator[bytes]) -> Iterator[bytes]:
    return itertools.chain([start], endless)


@pytest.fixture
def quick(hostile: HostileHarness) -> HostileHarness:
    hostile.monkeypatch.setenv("POP3_TIMEOUT_SECONDS", "1")
    return hostile


@pytest.mark.parametrize("wire", [endless_lines, endless_line], ids=["lines", "one-line"])
def test_endless_message_is_cut_at_its_allowed_size_and_does_not_block_the_rest(
    hostile: HostileHarness, wire: object
) -> None:
    hostile.monkeypatch.setenv("POISON_THRESHOLD", "1")
    good = messages(2)
    endless = FakeMessage(simple_message(99), b"endless", listed_size=100, wire=wire)  # type: ignore[arg-type]
    fake = hostile.serve([good[0], endless, good[1]])

    first = hostile.attempt()

    hostile.check(first)
    assert first.stopped == "connection_lost"
    text = hostile.logged("message left on server", "exceeded")
    assert str(allowed_size(100)) in text
    hostile.logged(LOST, "oversized", levels=("ERROR",))
    assert fake.committed == []  # the session was dropped without QUIT

    # The endless message is set aside (poison policy); the others get through.
    for _ in range(2):
        hostile.check(hostile.attempt())
    assert set(fake.committed) == set(good)
    assert fake.messages == [endless]


def test_endless_listing_is_cut(hostile: HostileHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "MAX_LISTING_BYTES", 256 * 1024)
    fake = hostile.serve(
        messages(2),
        replies={"UIDL": lambda s, arg: after(b"+OK\r\n", endless_lines(b"1 same-uidl"))},
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "connection_lost"
    hostile.logged(LOST, "UIDL listing: more than 262144 bytes", levels=("ERROR",))
    assert fake.committed == []


def test_listing_line_that_never_ends(hostile: HostileHarness) -> None:
    fake = hostile.serve(
        messages(2),
        replies={"LIST": lambda s, arg: after(b"+OK\r\n1 ", endless_line(b"9"))},
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "connection_lost"
    hostile.logged(LOST, "longer than 2048 bytes", levels=("ERROR",))
    assert fake.committed == []


def test_endless_capa_ends_the_login(hostile: HostileHarness) -> None:
    fake = hostile.serve(
        messages(1),
        replies={"CAPA": lambda s, arg: after(b"+OK\r\n", endless_lines(b"X-CAP"))},
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert isinstance(outcome.error, ConnectionLost)
    assert "CAPA: more than" in str(outcome.error)
    hostile.logged("connection lost", levels=("ERROR",))
    assert not fake.received_pass


# -- drip: one byte at a time ------------------------------------------------------
# drip_interval 0.25 s: every single read gets a byte well within the 1 s
# per-read timeout, so only a limit on the whole answer can end it.


def test_dripping_greeting_is_a_connect_error(quick: HostileHarness) -> None:
    fake = quick.serve(messages(1), faults=[Fault("greeting", "drip")], drip_interval=0.25)
    outcome = quick.attempt()
    quick.check(outcome)
    assert isinstance(outcome.error, ConnectError)
    assert "greeting: no complete answer within POP3_TIMEOUT_SECONDS=1 s" in str(outcome.error)
    quick.logged("cannot reach the mailbox safely", levels=("ERROR",))
    assert not fake.received_pass


def test_silent_server_is_a_connect_error(quick: HostileHarness) -> None:
    fake = quick.serve(messages(1), greeting=None)
    outcome = quick.attempt()
    quick.check(outcome)
    assert isinstance(outcome.error, ConnectError)
    quick.logged("cannot reach the mailbox safely", levels=("ERROR",))
    assert fake.verbs() == []


def test_dripping_login_answer_ends_the_run(quick: HostileHarness) -> None:
    quick.serve(messages(1), faults=[Fault("PASS", "drip")], drip_interval=0.25)
    outcome = quick.attempt()
    quick.check(outcome)
    assert isinstance(outcome.error, ConnectionLost)
    assert "no complete answer within POP3_TIMEOUT_SECONDS" in str(outcome.error)
    quick.logged("connection lost", levels=("ERROR",))


def test_dripping_listing_ends_the_session(quick: HostileHarness) -> None:
    fake = quick.serve(messages(3), faults=[Fault("UIDL-body", "drip")], drip_interval=0.25)
    outcome = quick.attempt()
    quick.check(outcome)
    assert outcome.stopped == "connection_lost"
    quick.logged(LOST, "UIDL listing: server too slow", levels=("ERROR",))
    assert fake.committed == []


def test_dripping_message_hits_the_per_message_limit(quick: HostileHarness) -> None:
    mail = messages(3)
    fake = quick.serve(mail, faults=[Fault("RETR-body", "drip", nth=2)], drip_interval=0.25)

    outcome = quick.attempt()

    quick.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    text = quick.logged(LOST, "RETR 2: server too slow", levels=("ERROR",))
    assert "MIN_TRANSFER_BYTES_PER_SECOND" in text
    assert mail[1] not in fake.committed  # the dripping message was never deleted
    assert mail[0].body in quick.stored().values()  # what arrived in time is kept


def test_dripping_status_line_of_retr(quick: HostileHarness) -> None:
    quick.serve(messages(2), faults=[Fault("RETR", "drip")], drip_interval=0.25)
    outcome = quick.attempt()
    quick.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    quick.logged(LOST, "RETR 1: no complete answer within", levels=("ERROR",))


def test_server_that_never_answers_a_retr(quick: HostileHarness) -> None:
    quick.serve(messages(2), faults=[Fault("RETR", "hang")])
    outcome = quick.attempt()
    quick.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    quick.logged(LOST, "RETR 1", levels=("ERROR",))


def test_pipelining_advertised_but_only_the_first_command_answered(
    quick: HostileHarness,
) -> None:
    mail = messages(4)
    quick.serve(mail, replies={"RETR": lambda s, arg: None if arg == "1" else b""})
    outcome = quick.attempt()
    quick.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    quick.logged(LOST, "RETR 2", levels=("ERROR",))
    assert mail[0].body in quick.stored().values()


def test_a_drip_is_cut_off_when_the_lambda_runs_out_of_time(hostile: HostileHarness) -> None:
    # The POP3 timeout is longer than the run has left, so only the run's own
    # cut-off can end the drip; enough time is left to start the message even
    # on a loaded machine.
    hostile.monkeypatch.setenv("POP3_TIMEOUT_SECONDS", "60")
    fake = hostile.serve(messages(2), faults=[Fault("RETR-body", "drip")], drip_interval=0.25)
    outcome = hostile.attempt(remaining_ms=6_000)  # DEADLINE_MARGIN_SECONDS=2
    hostile.check(outcome)
    assert fake.committed == []
    hostile.logged(LOST, "the run is out of time", levels=("ERROR",))


def test_min_transfer_rate_is_configurable(quick: HostileHarness) -> None:
    quick.monkeypatch.setenv("MIN_TRANSFER_BYTES_PER_SECOND", "1000")
    quick.serve(messages(1), faults=[Fault("RETR-body", "drip")], drip_interval=0.25)
    outcome = quick.attempt()
    quick.check(outcome)
    quick.logged(LOST, "MIN_TRANSFER_BYTES_PER_SECOND=1000", levels=("ERROR",))
