"""Answers out of order, answers too many, answers to the wrong command; PIPELINING or not.

The client can only store what the server sends; what it guarantees is that it
notices when the answers stop lining up with its commands, and then drops the
session without QUIT, so that nothing is deleted on a misread answer.
"""

from __future__ import annotations

import pytest
from tests.support.fake_pop3 import FakeSession
from tests.support.harness import AFTER_A_BROKEN_MESSAGE, HostileHarness, messages

pytestmark = pytest.mark.integration

OUT_OF_STEP = "connection lost; no deletion of this session counts"


def test_retr_answers_swapped_keep_every_byte(hostile: HostileHarness) -> None:
    mail = messages(3)

    def swapped(session: FakeSession, arg: str) -> object:
        other = {"1": 2, "2": 1}.get(arg)
        return None if other is None else session.retr_answer(session.numbered[other])

    fake = hostile.serve(mail, replies={"RETR": swapped})
    outcome = hostile.attempt()
    hostile.check(outcome)  # every deleted message's bytes are stored (if under the other key)
    assert outcome.stopped == "completed"
    assert set(fake.committed) == set(mail)


@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelined_answers_in_reverse_order(hostile: HostileHarness, pipelining: bool) -> None:
    fake = hostile.serve(messages(6), reorder_pipelined=True, pipelining=pipelining)
    for _ in range(3):
        hostile.check(hostile.attempt())
    if pipelining:
        assert fake.reordered > 0
    else:
        assert fake.pipelining_violations == 0
        assert fake.reordered == 0
        assert fake.messages == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_stray_line_after_a_message_is_noticed_at_the_next_retr(
    hostile: HostileHarness, pipelining: bool
) -> None:
    mail = messages(3)
    hostile.serve(
        mail,
        pipelining=pipelining,
        replies={
            "RETR": lambda s, arg: (
                [*s.retr_answer(s.numbered[1]), b"+OK one answer too many\r\n"]
                if arg == "1"
                else None
            )
        },
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    hostile.logged(OUT_OF_STEP, "the message starts with a status line", levels=("ERROR",))
    for body in hostile.stored().values():
        assert not body.startswith(b"+OK")


def test_stray_line_after_a_dele_answer(hostile: HostileHarness) -> None:
    # Taken for the next DELE's answer, or a RETR's (then noticed): harmless.
    fake = hostile.serve(
        messages(3),
        replies={
            "DELE": lambda s, arg: (
                [s.default("DELE", arg), b"+OK one answer too many\r\n"] if arg == "1" else None
            )
        },
    )
    hostile.check(hostile.attempt())
    for body in hostile.stored().values():
        assert not body.startswith(b"+OK")
    assert fake.errors == []


def test_extra_line_before_the_status_of_retr(hostile: HostileHarness) -> None:
    mail = messages(2)
    hostile.serve(
        mail,
        pipelining=False,
        replies={
            "RETR": lambda s, arg: (
                [b"+OK surprise\r\n", *s.retr_answer(s.numbered[1])] if arg == "1" else None
            )
        },
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    hostile.logged(OUT_OF_STEP, "RETR 1: the message starts with a status line", levels=("ERROR",))
    # Nothing out of step was stored; the other message went on in a new session.
    assert sorted(hostile.stored().values()) == [mail[1].body]


def test_err_status_followed_by_the_message_anyway(hostile: HostileHarness) -> None:
    mail = messages(3)
    hostile.serve(
        mail,
        pipelining=False,
        replies={
            "RETR": lambda s, arg: (
                [b"-ERR no\r\n", *list(s.retr_answer(s.numbered[1]))[1:]] if arg == "1" else None
            )
        },
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    hostile.logged(OUT_OF_STEP, "expected +OK or -ERR", levels=("ERROR",))


def test_answer_to_a_command_that_was_not_sent(hostile: HostileHarness) -> None:
    # LIST answered with a UIDL listing: the sizes are not numbers.
    mail = messages(2)
    fake = hostile.serve(
        mail, replies={"LIST": lambda s, arg: None if arg else s.default("UIDL", "")}
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert fake.committed == []
    hostile.logged(
        "listing entry that cannot be fetched safely left on server", "LIST size is not a number"
    )


def test_no_pipelining_when_not_advertised(hostile: HostileHarness) -> None:
    mail = messages(8)
    fake = hostile.serve(mail, pipelining=False)
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed"
    assert fake.pipelining_violations == 0
    assert set(fake.committed) == set(mail)


def test_pipelining_advertised_is_used(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(8))
    hostile.check(hostile.attempt())
    assert fake.messages == []
