"""A connection reset, a garbage status line or a refusal at every step of the protocol.

Each case ends with no crash, nothing deleted that is not stored, and a clear
log line; after a one-off reset, the next run drains the mailbox.
"""

from __future__ import annotations

import pytest
from tests.support.fake_pop3 import Fault
from tests.support.harness import AFTER_A_BROKEN_MESSAGE, HostileHarness, Outcome, messages

from pop3_ingest.errors import AuthError, ConnectError, ConnectionLost, ProtocolError, TlsError

pytestmark = pytest.mark.integration

# Where each step's failure surfaces: the error the handler raises (None: it
# returns a summary), the summary's "stopped", and the log line that says so.
RAISED_AT_LOGIN = (ConnectionLost, None, "connection lost")
LOST_IN_SESSION = (None, "connection_lost", "connection lost; no deletion of this session counts")
# Broken while a message is read: counted against it, and a new session goes on.
LOST_AT_A_MESSAGE = (
    None,
    AFTER_A_BROKEN_MESSAGE,
    "connection lost; no deletion of this session counts",
)
QUIT_FAILED = (None, "completed", "QUIT failed")
EXPECTED = {
    "greeting": (ConnectError, None, "cannot reach the mailbox safely"),
    "CAPA": RAISED_AT_LOGIN,
    "USER": RAISED_AT_LOGIN,
    "PASS": RAISED_AT_LOGIN,
    "UIDL": LOST_IN_SESSION,
    "LIST": LOST_IN_SESSION,
    "RETR": LOST_AT_A_MESSAGE,
    "RETR-body": LOST_AT_A_MESSAGE,
    "DELE": LOST_IN_SESSION,
    "QUIT": QUIT_FAILED,
    "QUIT-after-commit": QUIT_FAILED,
}


def expect(hostile: HostileHarness, outcome: Outcome, step: str) -> None:
    error, stopped, line = EXPECTED[step]
    hostile.check(outcome)
    if error is None:
        assert outcome.error is None, outcome.error
        allowed = stopped if isinstance(stopped, tuple) else (stopped,)
        assert outcome.stopped in allowed
    else:
        assert isinstance(outcome.error, error), repr(outcome.error)
    hostile.logged(line, levels=("ERROR",))


def drained(hostile: HostileHarness, count: int) -> None:
    """A normal run empties the mailbox and every message is stored byte for byte."""
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed", outcome
    assert hostile.fake.messages == []
    assert len(hostile.fake.committed) == count
    assert sorted(hostile.stored().values()) == sorted(m.body for m in hostile.fake.committed)


@pytest.mark.parametrize("step", list(EXPECTED))
def test_connection_reset_at_each_step(hostile: HostileHarness, step: str) -> None:
    mail = messages(3)
    fake = hostile.serve(mail, faults=[Fault(step, "reset")])

    outcome = hostile.attempt()

    assert fake.faults_applied == [(0, step, "reset")]
    expect(hostile, outcome, step)
    if step in ("RETR", "RETR-body"):
        # The message being read was counted and left; the rest went on in a
        # new session, once the reset session had committed nothing.
        assert len(fake.committed) == 2
    elif step != "QUIT-after-commit":
        assert fake.committed == []  # the reset came before anything was committed
    drained(hostile, 3)


@pytest.mark.parametrize("step", ["RETR-body", "DELE"])
def test_connection_closed_cleanly_at_a_step(hostile: HostileHarness, step: str) -> None:
    fake = hostile.serve(messages(3), faults=[Fault(step, "close")])
    outcome = hostile.attempt()
    expect(hostile, outcome, step)
    # Closed in a message: it is left, the others go on in a new session.
    assert len(fake.committed) == (2 if step == "RETR-body" else 0)
    drained(hostile, 3)


GARBAGE = b"HELLO, this is not POP3\r\n"


@pytest.mark.parametrize(
    "step", ["greeting", "CAPA", "USER", "PASS", "UIDL", "LIST", "RETR", "DELE", "QUIT"]
)
def test_status_line_that_is_neither_ok_nor_err(hostile: HostileHarness, step: str) -> None:
    if step == "greeting":
        fake = hostile.serve(messages(3), greeting=GARBAGE)
    else:
        fake = hostile.serve(messages(3), replies={step: GARBAGE})

    outcome = hostile.attempt()

    expect(hostile, outcome, step)
    assert fake.committed == []
    if step == "greeting":
        assert not fake.received_pass  # never log in to something that is not POP3
        assert "expected +OK or -ERR" in str(outcome.error)


def test_greeting_with_8bit_bytes_and_no_line_end(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(1), greeting=b"\xff\xfe\x00 garbage" * 300)
    outcome = hostile.attempt()
    expect(hostile, outcome, "greeting")
    assert not fake.received_pass


def test_err_greeting_is_a_connect_error_and_busy_greeting_is_busy(
    hostile: HostileHarness,
) -> None:
    fake = hostile.serve(messages(1), greeting=b"-ERR too many connections from your IP\r\n")
    outcome = hostile.attempt()
    expect(hostile, outcome, "greeting")
    assert "refused the session" in str(outcome.error)
    assert not fake.received_pass

    fake = hostile.serve(messages(1), greeting=b"-ERR [IN-USE] mailbox locked\r\n")
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "busy"
    hostile.logged("mailbox busy")


def test_capa_refused_means_no_pipelining_and_the_run_completes(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(4), capa=False)
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed"
    assert len(fake.committed) == 4
    assert fake.pipelining_violations == 0


def test_capa_with_8bit_and_empty_lines_is_tolerated(hostile: HostileHarness) -> None:
    capa = b"+OK\r\nUIDL\r\n\r\n   \r\nX-\xff\xfe\xc3(\r\nPIPELINING\r\nLOGIN-DELAY \xb2\r\n.\r\n"
    fake = hostile.serve(messages(2), replies={"CAPA": capa})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed"
    assert len(fake.committed) == 2


@pytest.mark.parametrize("step", ["USER", "PASS"])
def test_login_refused(hostile: HostileHarness, step: str) -> None:
    fake = hostile.serve(messages(1), replies={step: b"-ERR [AUTH] no\r\n"})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert isinstance(outcome.error, AuthError)
    hostile.logged("login failed", "[AUTH]", levels=("ERROR",))
    assert fake.committed == []


def test_list_refused_raises_a_protocol_error(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(2), replies={"LIST": b"-ERR command not implemented\r\n"})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert isinstance(outcome.error, ProtocolError)
    assert "LIST is required" in str(outcome.error)
    assert fake.committed == []
    hostile.logged("LIST refused", levels=("ERROR",))


def test_server_without_uidl_is_drained_by_content(hostile: HostileHarness) -> None:
    # RFC 1939 makes UIDL optional: each message is known by its digest.
    mail = messages(2)
    fake = hostile.serve(mail, replies={"UIDL": b"-ERR command not implemented\r\n"})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.stopped == "completed"
    assert set(fake.committed) == set(mail)
    assert sorted(hostile.stored().values()) == sorted(m.body for m in mail)
    hostile.logged("server has no UIDL", levels=("WARNING",))


def test_retr_refused_for_one_message_leaves_only_that_one(hostile: HostileHarness) -> None:
    mail = messages(3)
    fake = hostile.serve(
        mail,
        replies={"RETR": lambda s, arg: b"-ERR [SYS/TEMP] unreadable\r\n" if arg == "2" else None},
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.summary is not None
    assert outcome.summary["failed"] == 1
    assert mail[1] not in fake.committed
    assert {m.body for m in mail if m is not mail[1]} <= set(hostile.stored().values())
    hostile.logged("message left on server", "RETR 2 refused")


def test_dele_refused_leaves_the_message(hostile: HostileHarness) -> None:
    mail = messages(3)
    fake = hostile.serve(
        mail,
        replies={"DELE": lambda s, arg: b"-ERR cannot delete\r\n" if arg == "1" else None},
    )
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert mail[0] not in fake.committed
    assert set(fake.committed) == {mail[1], mail[2]}
    hostile.logged("DELE refused; message stays")


def test_quit_refused_commits_nothing(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(2), replies={"QUIT": b"-ERR some messages not deleted\r\n"})
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 0
    assert fake.committed == []
    hostile.logged("QUIT failed", "QUIT refused", levels=("ERROR",))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"-ERR not now\r\n", TlsError),  # refused
        (GARBAGE, ConnectionLost),  # not an answer at all
        (b"+OK begin TLS\r\n+OK but in clear text\r\n", TlsError),  # no handshake follows
    ],
    ids=["refused", "garbage", "no-handshake"],
)
def test_stls_that_goes_wrong_never_gets_the_credentials(
    hostile: HostileHarness, answer: bytes, error: type[Exception]
) -> None:
    fake = hostile.serve(messages(1), extra_capabilities=["STLS"], replies={"STLS": answer})
    hostile.configure(hostile.secret(tls="starttls"))
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert isinstance(outcome.error, error), repr(outcome.error)
    assert not fake.received_pass
    assert "USER" not in fake.verbs()
    line = "cannot reach the mailbox safely" if error is TlsError else "connection lost"
    hostile.logged(line, levels=("ERROR",))
