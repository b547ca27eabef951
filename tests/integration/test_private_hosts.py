"""A secret naming a private host, through the real handler (issue 10: tenant-written secrets).

The function, moto and Dovecot as in every integration test; a TcpProxy in
front of Dovecot counts every TCP connection the function opens. Unless the
deployment sets ALLOW_PRIVATE_HOSTS=true, a host on 127.0.0.1 (by address or by
name) is refused with an error that names the field, and nothing is connected.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.support import corpus
from tests.support.dovecot import DovecotServer
from tests.support.harness import Harness
from tests.support.moto_server import AwsResources
from tests.support.tcp_proxy import TcpProxy

from pop3_ingest.errors import AddressRefused, TlsError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("switch", [None, "false"], ids=["unset", "false"])
def test_a_loopback_host_is_refused_before_any_connection(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, host: str, switch: str | None
) -> None:
    harness.dovecot.deliver(harness.user, corpus.simple(1).raw_for_maildir)
    password = harness.dovecot.users[harness.user]
    with TcpProxy(harness.dovecot.pop3s_port) as proxy:
        harness.configure(harness.dovecot.secret(harness.user, host=host, port=proxy.port))
        if switch is None:
            monkeypatch.delenv("ALLOW_PRIVATE_HOSTS")
        else:
            monkeypatch.setenv("ALLOW_PRIVATE_HOSTS", switch)

        outcome = harness.attempt()

        assert proxy.connections == 0
    assert isinstance(outcome.error, AddressRefused), outcome
    assert outcome.error.field == "host"
    message = str(outcome.error)
    assert message.startswith(f"mailbox secret field 'host': {host} ")
    assert "loopback address" in message
    assert "ALLOW_PRIVATE_HOSTS=true" in message
    assert password not in message
    assert harness.dovecot.message_count(harness.user) == 1
    assert harness.mail_keys() == []


def test_allowed_private_hosts_are_fetched_as_any_other(harness: Harness) -> None:
    message = corpus.simple(1)
    harness.dovecot.deliver(harness.user, message.raw_for_maildir)
    with TcpProxy(harness.dovecot.pop3s_port) as proxy:
        harness.configure(
            harness.dovecot.secret(harness.user, port=proxy.port), ALLOW_PRIVATE_HOSTS="true"
        )

        summary = harness.run()

        assert proxy.connections >= 1
    assert summary["stopped"] == "completed"
    assert summary["stored"] == summary["deleted"] == 1
    assert list(harness.mail_objects().values()) == [message.expected]


def test_tls_verifies_the_host_name_while_connecting_to_the_checked_address(
    make_dovecot: Callable[..., DovecotServer], aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The certificate names localhost only, never its address: a login to
    # "localhost" can only succeed if TLS checks the name the secret gave
    # (the connection itself goes to the address localhost resolved to).
    server = make_dovecot(cert_sans=("DNS:localhost",))
    server.add_user("alice", "pw-tls-by-name")
    server.deliver("alice", corpus.simple(1).raw_for_maildir)

    def harness_for(host: str) -> Harness:
        # One secret per host (named after it): no cached secret stands in for another.
        harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch, user=host)
        harness.configure(server.secret("alice", host=host))
        return harness

    by_address = harness_for("127.0.0.1")
    with pytest.raises(TlsError, match="not trusted"):
        by_address.run()
    assert server.message_count("alice") == 1

    summary = harness_for("localhost").run()
    assert summary["stopped"] == "completed"
    assert summary["stored"] == 1
