"""Pop3Mailbox's time limits, credentials on the wire and error texts, against the fake server.

The handler-level cases are in ``tests/hostile``; these pin the session's own
behaviour, including the two knobs the handler passes in
(``min_bytes_per_second``, ``time_left``).
"""

from __future__ import annotations

import time

import pytest
from tests.support.corpus import simple_message
from tests.support.fake_pop3 import FakeMessage, FakePop3Server, Fault
from tests.support.local_hosts import LOCAL_SERVERS

from pop3_ingest.config import DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND, MailboxConfig, Settings
from pop3_ingest.errors import AuthError, ConfigError, Pop3IngestError, TransferTooSlow
from pop3_ingest.pop3 import Pop3Mailbox
from pop3_ingest.pop3.limits import TransferLimits
from pop3_ingest.pop3.session import MAX_LOGIN_DELAY

ENV = {"BUCKET_NAME": "b", "QUEUE_URL": "q"}


def config(server: FakePop3Server, **overrides: object) -> MailboxConfig:
    return MailboxConfig.from_secret(
        {
            "host": "127.0.0.1",
            "port": server.port,
            "tls": "none",
            "username": server.user,
            "password": server.password,
            **overrides,
        }
    )


# -- the setting ----------------------------------------------------------------------------


def test_min_transfer_rate_setting() -> None:
    default = Settings.from_env(ENV).min_transfer_bytes_per_second
    assert default == DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
    custom = Settings.from_env({**ENV, "MIN_TRANSFER_BYTES_PER_SECOND": "2048.5"})
    assert custom.min_transfer_bytes_per_second == 2048.5
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ConfigError, match="MIN_TRANSFER_BYTES_PER_SECOND"):
            Settings.from_env({**ENV, "MIN_TRANSFER_BYTES_PER_SECOND": bad})


# -- the allowances (arithmetic only, no waiting) -----------------------------------------------


def test_a_command_answer_gets_the_timeout_as_a_whole() -> None:
    clock = TransferLimits(timeout=30).clock("USER")
    assert clock.deadline() - clock.started == pytest.approx(30)


def test_a_message_gets_max_of_timeout_and_size_at_the_minimum_rate() -> None:
    limits = TransferLimits(timeout=30, min_rate=10_000)
    small = limits.clock("RETR 1", size=1000)
    assert small.deadline() - small.started == pytest.approx(30)
    big = limits.clock("RETR 2", size=5_000_000)
    assert big.deadline() - big.started == pytest.approx(500)
    big.received = 6_000_000  # bigger than LIST said: the allowance grows with it
    assert big.deadline() - big.started == pytest.approx(600)


def test_the_runs_own_deadline_caps_every_answer() -> None:
    limits = TransferLimits(timeout=30, min_rate=10_000, time_left=lambda: 2.0)
    clock = limits.clock("RETR 1", size=5_000_000)
    assert clock.deadline() - clock.started == pytest.approx(2, abs=0.1)
    assert "the run is out of time" in str(clock.expired())


# -- against the fake server ---------------------------------------------------------------------


def test_per_message_limit_names_the_configured_rate() -> None:
    mail = [FakeMessage(simple_message(1), b"u1")]
    with FakePop3Server(mail, faults=[Fault("RETR-body", "drip")], drip_interval=0.05) as server:
        mailbox = Pop3Mailbox(
            config(server), timeout=0.3, min_bytes_per_second=1234, address_policy=LOCAL_SERVERS
        )
        with mailbox:
            (message,) = mailbox.list_messages()
            mailbox.send_commands(["RETR 1"])
            stream = mailbox.read_retr(message)
            with pytest.raises(TransferTooSlow, match="MIN_TRANSFER_BYTES_PER_SECOND=1234"):
                stream.read_all()
            assert not mailbox.usable  # out of step: no QUIT will be sent
        assert "QUIT" not in server.verbs()
        assert server.committed == []


def test_time_left_cuts_a_read_off() -> None:
    mail = [FakeMessage(simple_message(1), b"u1")]
    with FakePop3Server(mail, faults=[Fault("RETR-body", "drip")], drip_interval=0.05) as server:
        end = time.monotonic() + 0.4
        mailbox = Pop3Mailbox(
            config(server),
            timeout=10,
            time_left=lambda: end - time.monotonic(),
            address_policy=LOCAL_SERVERS,
        )
        with mailbox:
            (message,) = mailbox.list_messages()
            mailbox.send_commands(["RETR 1"])
            with pytest.raises(TransferTooSlow, match="the run is out of time"):
                mailbox.read_retr(message).read_all()


def test_a_dripping_status_line_is_too_slow_although_every_read_gets_a_byte() -> None:
    server = FakePop3Server(faults=[Fault("USER", "drip")], drip_interval=0.1)
    with server, pytest.raises(TransferTooSlow, match="USER: no complete answer within"):
        Pop3Mailbox(config(server), timeout=0.3, address_policy=LOCAL_SERVERS).__enter__()


def test_password_that_cannot_be_sent_is_an_auth_error() -> None:
    with FakePop3Server() as server:
        mailbox = Pop3Mailbox(
            config(server, password="lone \ud800 surrogate"),
            timeout=2,
            address_policy=LOCAL_SERVERS,
        )
        with pytest.raises(AuthError, match="cannot be sent as UTF-8") as info:
            mailbox.__enter__()
        assert info.value.__cause__ is None
        assert "surrogate" not in str(info.value)


def test_password_is_not_sent_through_poplib_putline(monkeypatch: pytest.MonkeyPatch) -> None:
    # poplib's _putline hands every line to sys.audit hooks and debug prints.
    import poplib

    lines: list[bytes] = []
    original = poplib.POP3._putline  # type: ignore[attr-defined]

    def spy(self: poplib.POP3, line: bytes) -> None:
        lines.append(line)
        original(self, line)

    monkeypatch.setattr(poplib.POP3, "_putline", spy)
    with (
        FakePop3Server(password="pw-on-the-wire-only") as server,
        Pop3Mailbox(config(server), timeout=2, address_policy=LOCAL_SERVERS),
    ):
        pass
    assert lines  # USER went through it
    assert not any(b"pw-on-the-wire-only" in line for line in lines)


def test_an_echoed_password_is_hidden_even_at_the_end_of_a_long_line() -> None:
    password = "Sw0rdfish-Secret-42"
    with (
        FakePop3Server(
            password=password,
            replies={"PASS": lambda s, arg: b"-ERR " + b"x" * 190 + arg.encode() + b"\r\n"},
        ) as server,
        pytest.raises(AuthError) as info,
    ):
        Pop3Mailbox(config(server), timeout=2, address_policy=LOCAL_SERVERS).__enter__()
    text = str(info.value)
    assert "the server rejected the credentials" in text
    for length in range(4, len(password) + 1):
        assert password[:length] not in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30", 30), ("99999999999", MAX_LOGIN_DELAY), ("\u00b2", 0), ("-5", 0), ("", 0)],
)
def test_login_delay_is_bounded(value: str, expected: int) -> None:
    server = FakePop3Server(extra_capabilities=[f"LOGIN-DELAY {value}".strip()])
    with server, Pop3Mailbox(config(server), timeout=2, address_policy=LOCAL_SERVERS) as mailbox:
        assert mailbox.login_delay == expected


@pytest.mark.parametrize(
    "step", ["greeting", "CAPA", "USER", "PASS", "UIDL", "LIST", "RETR", "RETR-body", "DELE"]
)
def test_reset_at_any_step_is_a_package_error(step: str) -> None:
    def session(server: FakePop3Server) -> None:
        with Pop3Mailbox(config(server), timeout=2, address_policy=LOCAL_SERVERS) as mailbox:
            (message,) = mailbox.list_messages()
            mailbox.send_commands(["RETR 1"])
            mailbox.read_retr(message).read_all()
            mailbox.send_commands(["DELE 1"])
            mailbox.read_dele(message)

    mail = [FakeMessage(simple_message(1), b"u1")]
    with FakePop3Server(mail, faults=[Fault(step, "reset")]) as server:
        with pytest.raises(Pop3IngestError):
            session(server)
        assert server.committed == []
