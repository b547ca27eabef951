"""UIDLs a server should never send and LIST sizes that lie.

Keys stay safe (``mail/<mailbox>/<40 hex>.eml`` whatever the UIDL) and unique;
a message that cannot be told apart from another (empty, missing or shared
UIDL) is known by its content instead (``c-<sha256>.eml``): downloaded, hashed,
stored, announced and deleted in one session, never on the UIDL's word.
"""

from __future__ import annotations

import re

import pytest
from tests.support.corpus import simple_message
from tests.support.fake_pop3 import FakeMessage, Fault
from tests.support.harness import MAILBOX, HostileHarness, messages

pytestmark = pytest.mark.integration

KEY = re.compile(rf"^mail/{MAILBOX}/[0-9a-f]{{40}}\.eml$")
CONTENT_KEY = re.compile(rf"^mail/{MAILBOX}/c-[0-9a-f]{{64}}\.eml$")
SKIPPED = "listing entry that cannot be fetched safely left on server"

ODD_BUT_USABLE = [
    b"x" * 200,  # longer than RFC 1939's 70
    b"\xc3\xa9t\xc3\xa9-\xff\x80",  # 8-bit
    b"a/b/c",
    b"../../../etc/passwd",
    b"..",
    b"/",
    b"100%25%2F%s%n",
    b"with spaces inside",
    b".starts-with-a-dot",
    b"\x1b[31mANSI\x1b[0m",
]


def test_odd_uidls_get_safe_unique_keys_and_unusable_ones_are_drained_by_content(
    hostile: HostileHarness,
) -> None:
    usable = [FakeMessage(simple_message(i), uidl) for i, uidl in enumerate(ODD_BUT_USABLE)]
    empty = FakeMessage(simple_message(50), b"")  # "n " with nothing after it
    missing = FakeMessage(simple_message(51), None)  # "n" alone
    twin_a = FakeMessage(simple_message(52), b"same")
    twin_b = FakeMessage(simple_message(53), b"same")
    unnamed = [empty, missing, twin_a, twin_b]
    fake = hostile.serve([empty, *usable[:5], twin_a, missing, *usable[5:], twin_b])

    outcome = hostile.attempt()

    hostile.check(outcome)
    assert outcome.stopped == "completed"
    stored = hostile.stored()
    by_uidl = {k: v for k, v in stored.items() if KEY.match(k)}
    by_content = {k: v for k, v in stored.items() if CONTENT_KEY.match(k)}
    assert len(by_uidl) + len(by_content) == len(stored), sorted(stored)
    assert sorted(by_uidl.values()) == sorted(m.body for m in usable)  # one key each
    assert sorted(by_content.values()) == sorted(m.body for m in unnamed)
    assert fake.messages == []  # every one drained
    pointers = hostile.aws.receive_all()
    assert {p["key"] for p in pointers} == set(stored)
    assert {p["uidl"] for p in pointers if KEY.match(p["key"])} == {
        u.decode("latin-1") for u in ODD_BUT_USABLE
    }

    # Nothing comes back, nothing is announced twice.
    again = hostile.attempt()
    hostile.check(again)
    assert hostile.aws.receive_all() == []


def test_broken_message_numbers_in_the_listing(hostile: HostileHarness) -> None:
    mail = messages(3)
    listing = b"+OK\r\n0 zero\r\n1 uidl-0001\r\n2 uidl-0002\r\n2 again\r\n3 uidl-0003\r\n.\r\n"
    fake = hostile.serve(mail, replies={"UIDL": listing})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed"
    assert set(fake.committed) == {mail[0], mail[2]}
    hostile.logged(SKIPPED, "message number listed twice")
    hostile.logged(SKIPPED, "message number 0")


def test_listing_line_that_is_not_a_listing_line_drops_the_session(
    hostile: HostileHarness,
) -> None:
    fake = hostile.serve(
        messages(2), replies={"UIDL": b"+OK\r\n1 uidl-0001\r\n+OK stray status\r\n.\r\n"}
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "connection_lost"
    hostile.logged("UIDL listing line 2 is not '<number> <value>'", levels=("ERROR",))
    assert fake.committed == []


def test_list_sizes_that_lie(hostile: HostileHarness) -> None:
    small = messages(1)[0]
    bigger_than_said = FakeMessage(b"X-Pad: " + b"p" * 2_000_000 + b"\r\n\r\nbody\r\n", b"big")
    bigger_than_said.listed_size = 10
    smaller_than_said = FakeMessage(simple_message(7), b"small", listed_size=5_000_000)
    zero = FakeMessage(simple_message(8), b"zero", listed_size=0)
    not_a_number = FakeMessage(simple_message(9), b"nan", listed_size=b"-12")
    absent = FakeMessage(simple_message(10), b"absent", listed_size=b"")
    fake = hostile.serve(
        [small, smaller_than_said, zero, not_a_number, absent, bigger_than_said],
        replies={
            # LIST leaves out the fifth message altogether.
            "LIST": lambda s, arg: (
                None
                if arg
                else b"+OK\r\n"
                + b"".join(
                    b"%d %s\r\n"
                    % (n, str(m.listed_size if m.listed_size is not None else m.size).encode())
                    for n, m in s.numbered.items()
                    if m is not absent
                )
                + b".\r\n"
            )
        },
    )

    outcome = hostile.attempt()

    hostile.check(outcome)
    assert outcome.stopped == "connection_lost"  # the session that met the oversized answer
    hostile.logged("message left on server", "exceeded")
    hostile.logged(SKIPPED, "LIST size is not a number")
    hostile.logged(SKIPPED, "listed by UIDL but not by LIST")
    stored = set(hostile.stored().values())
    assert {small.body, smaller_than_said.body, zero.body} <= stored
    assert bigger_than_said.body not in stored
    assert bigger_than_said in fake.messages
    assert not_a_number in fake.messages
    assert absent in fake.messages


def test_size_beyond_max_message_size_is_left_alone(hostile: HostileHarness) -> None:
    huge = FakeMessage(simple_message(1), b"huge", listed_size=10**15)
    fake = hostile.serve([huge, *messages(2, start=2)])
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.summary is not None
    assert outcome.summary["oversized"] == 1
    assert huge in fake.messages
    assert len(fake.committed) == 2
    hostile.logged("larger than max_message_size")


def test_uidl_reused_for_new_mail_after_a_deletion_loses_nothing(
    hostile: HostileHarness,
) -> None:
    # A server that numbers its UIDLs (against RFC 1939): after "1" was
    # deleted, the next message to arrive is "1" again.
    first = FakeMessage(simple_message(1), b"1")
    fake = hostile.serve([first])
    hostile.check(hostile.attempt())
    assert fake.committed == [first]

    newcomer = FakeMessage(simple_message(2), b"1")
    fake.messages.append(newcomer)
    outcome = hostile.attempt()

    hostile.check(outcome)  # nothing deleted whose bytes are not in S3
    # Same UIDL and size, other bytes: new mail, stored and announced.
    assert newcomer.body in hostile.stored().values()


def test_uidl_reused_after_an_uncommitted_run_loses_nothing(hostile: HostileHarness) -> None:
    first = FakeMessage(simple_message(1), b"1")
    fake = hostile.serve([first], faults=[Fault("DELE", "reset")])
    outcome = hostile.attempt()  # stored and announced, then the line drops at DELE
    hostile.check(outcome)
    assert fake.committed == []
    assert first.body in hostile.stored().values()

    # Meanwhile another client took "1"; a new message arrives and gets "1".
    fake.messages.remove(first)
    newcomer = FakeMessage(simple_message(2), b"1")
    fake.messages.append(newcomer)
    outcome = hostile.attempt()

    hostile.check(outcome)  # the newcomer must not be deleted unless stored
