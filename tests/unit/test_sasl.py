"""SASL for POP3: the exact bytes of AUTH PLAIN and AUTH XOAUTH2, against a scripted server."""

from __future__ import annotations

import base64
import json
import poplib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from tests.support.background import JOIN_TIMEOUT_S, ThreadedTcpServer

from pop3_ingest.pop3 import auth as sasl
from pop3_ingest.pop3.auth import SaslRejected

USER = "alice@example.com"
PASSWORD = "correct horse battery staple"
TOKEN = "ya29.a0AfH6SMB-token_value~with.dots/and+plus=="
XOAUTH2 = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode())
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
ERROR_CHALLENGE = b"+ " + base64.b64encode(
    json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"}).encode()
)


class ScriptedServer(ThreadedTcpServer):
    """Answers each line the client sends with the next scripted reply; records the bytes."""

    thread_name = "scripted-pop3"

    def __init__(self, replies: list[bytes]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.received = bytearray()
        self._conversations: list[threading.Thread] = []

    def accepted(self, conn: socket.socket, index: int) -> None:
        thread = self.spawn(self._converse, self.track(conn), name=f"scripted-pop3-{index}")
        with self.lock:
            self._conversations.append(thread)

    def _converse(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"+OK fake POP3 ready\r\n")
            buffer = b""
            while self.replies:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.received += chunk
                buffer += chunk
                while b"\r\n" in buffer and self.replies:
                    _, buffer = buffer.split(b"\r\n", 1)
                    conn.sendall(self.replies.pop(0) + b"\r\n")
            # Script done: keep reading until the client hangs up.
            while chunk := conn.recv(4096):
                self.received += chunk

    def lines(self) -> list[bytes]:
        return bytes(self.received).split(b"\r\n")[:-1]

    def close(self) -> None:
        # The client has hung up: let each conversation read to the end of what it sent
        # before the base class shuts the sockets down.
        with self.lock:
            conversations = list(self._conversations)
        for thread in conversations:
            thread.join(timeout=JOIN_TIMEOUT_S)
        super().close()


Connect = Callable[[list[bytes]], tuple[poplib.POP3, ScriptedServer]]


@pytest.fixture
def pop() -> Iterator[Connect]:
    """``pop(replies)`` -> (poplib client connected to a scripted server, server)."""
    made: list[tuple[poplib.POP3, ScriptedServer]] = []

    def connect(replies: list[bytes]) -> tuple[poplib.POP3, ScriptedServer]:
        server = ScriptedServer(replies).start()
        client = poplib.POP3("127.0.0.1", server.port, timeout=5)
        made.append((client, server))
        return client, server

    yield connect
    for client, server in made:
        client.close()
        server.close()


def finish(client: poplib.POP3, server: ScriptedServer) -> list[bytes]:
    client.close()
    server.close()
    assert not server.errors
    return server.lines()


# -- AUTH, in the shape of smtplib's auth(mechanism, authobject) ----------------


def test_auth_answers_each_decoded_challenge_with_the_authobject(pop: Connect) -> None:
    challenges: list[bytes | None] = []

    def login(challenge: bytes | None = None) -> bytes | None:
        challenges.append(challenge)
        return {b"Username:": b"alice", b"Password:": b"secret"}.get(challenge or b"")

    prompts = [b"+ " + base64.b64encode(b"Username:"), b"+ " + base64.b64encode(b"Password:")]
    client, server = pop([*prompts, b"+OK Logged in."])
    assert sasl.auth(client, "login", login, initial_response_ok=False) == b"+OK Logged in."
    assert challenges == [b"Username:", b"Password:"]
    sent = [b"AUTH LOGIN", base64.b64encode(b"alice"), base64.b64encode(b"secret")]
    assert finish(client, server) == sent


def test_auth_gives_up_on_a_server_that_keeps_challenging(pop: Connect) -> None:
    client, server = pop([b"+ "] * (sasl.MAX_CHALLENGES + 3))
    with pytest.raises(SaslRejected, match="unexpected answer to AUTH PLAIN"):
        sasl.auth(client, "PLAIN", lambda challenge=None: b"again")
    # The initial response, then one answer per challenge up to the limit.
    assert len(finish(client, server)) == 1 + sasl.MAX_CHALLENGES


# -- PLAIN ---------------------------------------------------------------------


def test_plain_response_is_rfc4616() -> None:
    assert base64.b64decode(sasl.plain_response("u", "p w")) == b"\0u\0p w"
    assert base64.b64decode(sasl.plain_response("u", "p", authzid="z")) == b"z\0u\0p"
    with pytest.raises(ValueError):
        sasl.plain_response("u", "p\0w")


def test_auth_plain_one_line(pop: Connect) -> None:
    client, server = pop([b"+OK Logged in."])
    assert sasl.auth_plain(client, USER, PASSWORD) == b"+OK Logged in."
    assert finish(client, server) == [b"AUTH PLAIN " + PLAIN]


def test_auth_plain_falls_back_to_two_step_on_empty_challenge(pop: Connect) -> None:
    client, server = pop([b"+ ", b"+OK Logged in."])
    assert sasl.auth_plain(client, USER, PASSWORD) == b"+OK Logged in."
    assert finish(client, server) == [b"AUTH PLAIN " + PLAIN, PLAIN]


def test_auth_plain_too_long_for_one_line_uses_two_step(pop: Connect) -> None:
    password = "x" * 200  # AUTH PLAIN <b64> would exceed 255 octets (RFC 5034 section 4)
    client, server = pop([b"+ ", b"+OK Logged in."])
    sasl.auth_plain(client, USER, password)
    response = base64.b64encode(f"\0{USER}\0{password}".encode())
    assert finish(client, server) == [b"AUTH PLAIN", response]


def test_auth_plain_rejected_raises_error_proto_with_the_err_line(pop: Connect) -> None:
    client, server = pop([b"-ERR [AUTH] Authentication failed."])
    with pytest.raises(poplib.error_proto) as caught:
        sasl.auth_plain(client, USER, PASSWORD)
    assert caught.value.args[0] == b"-ERR [AUTH]"  # the text may echo the credential
    assert PASSWORD not in str(caught.value)
    assert PLAIN.decode() not in str(caught.value)
    finish(client, server)


def test_auth_plain_busy_code_is_kept_for_the_caller(pop: Connect) -> None:
    client, server = pop([b"-ERR [IN-USE] Mailbox locked"])
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_plain(client, USER, PASSWORD)
    assert caught.value.args[0].startswith(b"-ERR [IN-USE]")
    finish(client, server)


# -- XOAUTH2 -------------------------------------------------------------------


def test_xoauth2_response_format() -> None:
    raw = base64.b64decode(sasl.xoauth2_response("bob", "tok.en"))
    assert raw == b"user=bob\x01auth=Bearer tok.en\x01\x01"


@pytest.mark.parametrize(
    ("user", "token"),
    [("bob", "sekrit tok"), ("bob", "sekrit\r\ntok"), ("bob", ""), ("b\x01b", "sekrit")],
)
def test_xoauth2_refuses_unsafe_values_without_echoing_them(user: str, token: str) -> None:
    with pytest.raises(ValueError) as caught:
        sasl.xoauth2_response(user, token)
    assert "sekrit" not in str(caught.value)


def test_xoauth2_two_step_exact_bytes(pop: Connect) -> None:
    client, server = pop([b"+ ", b"+OK Logged in."])
    assert sasl.auth_xoauth2(client, USER, TOKEN) == b"+OK Logged in."
    lines = finish(client, server)
    assert lines == [b"AUTH XOAUTH2", XOAUTH2]


def test_xoauth2_two_step_bytes_on_the_wire(pop: Connect) -> None:
    client, server = pop([b"+", b"+OK Logged in."])  # a bare "+" is a continuation too
    sasl.auth_xoauth2(client, USER, TOKEN, two_step=True)
    finish(client, server)
    assert bytes(server.received) == b"AUTH XOAUTH2\r\n" + XOAUTH2 + b"\r\n"


def test_xoauth2_one_line_exact_bytes(pop: Connect) -> None:
    client, server = pop([b"+OK Logged in."])
    assert sasl.auth_xoauth2(client, USER, TOKEN, two_step=False) == b"+OK Logged in."
    finish(client, server)
    assert bytes(server.received) == b"AUTH XOAUTH2 " + XOAUTH2 + b"\r\n"


@pytest.mark.parametrize("two_step", [True, False])
def test_xoauth2_rejected_token_sends_empty_line_then_raises(pop: Connect, two_step: bool) -> None:
    replies = [b"+ "] if two_step else []
    replies += [ERROR_CHALLENGE, b"-ERR [AUTH] Authentication failed."]
    client, server = pop(replies)
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_xoauth2(client, USER, TOKEN, two_step=two_step)
    err = caught.value
    assert isinstance(err, poplib.error_proto)
    assert err.status == "401"
    assert err.args[0] == b"-ERR [AUTH]"
    for text in (str(err), repr(err)):
        assert TOKEN not in text
        assert XOAUTH2.decode() not in text
    first = [b"AUTH XOAUTH2", XOAUTH2] if two_step else [b"AUTH XOAUTH2 " + XOAUTH2]
    assert finish(client, server) == [*first, b""]


def test_xoauth2_error_challenge_that_is_not_json_still_completes_the_exchange(
    pop: Connect,
) -> None:
    client, server = pop([b"+ ", b"+ not-base64!", b"-ERR [AUTH] Authentication failed."])
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_xoauth2(client, USER, TOKEN)
    assert caught.value.status is None
    assert caught.value.args[0] == b"-ERR [AUTH]"  # the text may echo the credential
    assert finish(client, server)[-1] == b""


def test_xoauth2_mechanism_not_offered(pop: Connect) -> None:
    client, server = pop([b"-ERR Unsupported authentication mechanism."])
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_xoauth2(client, USER, TOKEN)
    assert caught.value.args[0].startswith(b"-ERR")
    # The credential is never sent when the first step is refused.
    assert finish(client, server) == [b"AUTH XOAUTH2"]


def test_unexpected_answer_is_an_error_without_the_token(pop: Connect) -> None:
    client, server = pop([b"+OK but not a challenge"])
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_xoauth2(client, USER, TOKEN)
    assert b"unexpected answer to AUTH XOAUTH2" in caught.value.args[0]
    assert TOKEN not in str(caught.value)
    finish(client, server)


def test_credentials_never_reach_poplib_debug_output(
    pop: Connect, capsys: pytest.CaptureFixture[str]
) -> None:
    client, server = pop([b"+ ", b"+OK Logged in."])
    client.set_debuglevel(2)
    sasl.auth_xoauth2(client, USER, TOKEN)
    finish(client, server)
    out = capsys.readouterr()
    assert "AUTH XOAUTH2" in out.out  # the command itself is printed as usual
    assert TOKEN not in out.out + out.err
    assert XOAUTH2.decode() not in out.out + out.err


# -- CAPA ----------------------------------------------------------------------


def test_supported_mechanisms_from_capa() -> None:
    capa = {"USER": [], "SASL": ["PLAIN", "login", "XOAUTH2"], "TOP": []}
    assert sasl.supported_mechanisms(capa) == {"PLAIN", "LOGIN", "XOAUTH2"}
    assert sasl.supported_mechanisms({"USER": []}) == set()
    assert sasl.supported_mechanisms({}) == set()
