"""STARTTLS on the wire: CAPA once before STLS and once after, and no credential in clear.

A small loopback server that speaks just enough POP3 for a STARTTLS login
records every command it receives, in clear text and under TLS alike (it
holds the TLS keys, so it sees what a proxy in the middle could not).
"""

from __future__ import annotations

import socket
import ssl

import pytest
from tests.support.background import ThreadedTcpServer
from tests.support.certificates import Certificates, make_certificates
from tests.support.local_hosts import LOCAL_SERVERS

from pop3_ingest.config import MailboxConfig
from pop3_ingest.errors import TlsError
from pop3_ingest.pop3 import Pop3Mailbox

PASSWORD = "pw-only-under-tls"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA and a certificate for 127.0.0.1 that it signed."""
    return make_certificates(
        tmp_path_factory.mktemp("starttls-certs"),
        ca_name="pop3-ingest STARTTLS test CA",
        common_name="localhost",
        san="IP:127.0.0.1",
    )


class StarttlsServer(ThreadedTcpServer):
    """Serves CAPA (with STLS if offered), STLS, USER, PASS, UIDL, LIST, QUIT;
    ``commands`` holds every line received, as the server read it."""

    thread_name = "starttls-server"

    def __init__(self, tls: ssl.SSLContext, *, offer_stls: bool = True) -> None:
        super().__init__()
        self.commands: list[str] = []
        self._tls = tls
        self._offer_stls = offer_stls

    def accepted(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(10)
        self.spawn(self._converse, self.track(conn), name=f"starttls-{index}")

    def before_and_after_stls(self) -> tuple[list[str], list[str]]:
        """The command verbs sent in clear text, and those sent once STLS was answered."""
        verbs = [command.split(" ")[0].upper() for command in self.commands]
        if "STLS" not in verbs:
            return verbs, []
        at = verbs.index("STLS")
        return verbs[:at], verbs[at + 1 :]

    def _converse(self, conn: socket.socket) -> None:
        stream: socket.socket = conn
        reader = stream.makefile("rb")
        stream.sendall(b"+OK STARTTLS test server ready\r\n")
        while line := reader.readline():
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.commands.append(command)
            verb = command.split(" ")[0].upper()
            if verb == "STLS":
                stream.sendall(b"+OK begin TLS negotiation\r\n")
                reader.close()  # nothing more was sent in clear: the client waits for the handshake
                secured = self._tls.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
                self.track(secured)  # before the handshake: close() wakes one that stalls
                secured.do_handshake()
                stream, reader = secured, secured.makefile("rb")
                continue
            stream.sendall(self._answer(verb, under_tls=stream is not conn))
            if verb == "QUIT":
                return

    def _answer(self, verb: str, *, under_tls: bool) -> bytes:
        if verb == "CAPA":
            offered = ["USER", "PIPELINING"] if under_tls else ["USER"]
            if self._offer_stls and not under_tls:
                offered.append("STLS")
            return b"".join(f"{line}\r\n".encode() for line in ["+OK", *offered, "."])
        if verb in {"UIDL", "LIST"}:
            return b"+OK\r\n.\r\n"
        if verb in {"USER", "PASS", "QUIT"}:
            return b"+OK\r\n"
        return b"-ERR unknown command\r\n"


def config(port: int, ca_pem: str) -> MailboxConfig:
    return MailboxConfig.from_secret(
        {
            "host": "127.0.0.1",
            "port": port,
            "tls": "starttls",
            "username": "alice",
            "password": PASSWORD,
            "ca_cert": ca_pem,
        }
    )


def test_starttls_sends_capa_once_before_stls_and_once_after(certificates: Certificates) -> None:
    # GIVEN a server that offers STLS in clear text, and PIPELINING only under TLS
    # WHEN a STARTTLS session logs in, lists the mailbox and quits
    with (
        StarttlsServer(certificates.server_context) as server,
        Pop3Mailbox(
            config(server.port, certificates.ca_pem), timeout=5, address_policy=LOCAL_SERVERS
        ) as mailbox,
    ):
        assert mailbox.pipelining  # the capabilities in use are those read under TLS
        assert mailbox.list_messages() == []
    # THEN the clear-text part was one CAPA and STLS, and TLS began with one CAPA
    before, after = server.before_and_after_stls()
    assert before == ["CAPA"]
    assert after == ["CAPA", "USER", "PASS", "UIDL", "LIST", "QUIT"]
    assert f"PASS {PASSWORD}" in server.commands  # it did arrive, under TLS
    assert not server.errors


def test_a_server_without_stls_is_refused_before_any_credential(
    certificates: Certificates,
) -> None:
    with StarttlsServer(certificates.server_context, offer_stls=False) as server:
        mailbox = Pop3Mailbox(
            config(server.port, certificates.ca_pem), timeout=5, address_policy=LOCAL_SERVERS
        )
        with pytest.raises(TlsError, match="does not offer STLS"):
            mailbox.__enter__()
    assert server.commands == ["CAPA"]
    assert not server.errors
