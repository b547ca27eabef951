"""A tenant's secret cannot send the function to a private address (pop3_ingest.netguard).

Names are resolved by a fake resolver, so every address class can be named
without DNS; the servers behind the allowed cases listen on 127.0.0.1 under
names that no real resolver knows (``.invalid``, RFC 2606), which proves the
connection goes to the address that was checked, not to the name again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import socketserver
import ssl
from collections.abc import Iterator, Sequence

import pytest
from tests.support.certificates import Certificates, make_certificates
from tests.support.fake_pop3 import FakePop3Server
from tests.support.oauth_server import OAuthTestServer

from pop3_ingest.config import MICROSOFT_365_SCOPE, MailboxConfig, OAuthSettings, Settings
from pop3_ingest.errors import AddressRefused, ConfigError, ConnectError, TlsError
from pop3_ingest.integrations.oauth_tokens import TokenProvider, clear_token_cache
from pop3_ingest.netguard import AddressPolicy, AddrInfo, non_public_kind
from pop3_ingest.pop3 import Pop3Mailbox

CLIENT_SECRET = "n3tguard-CLIENT-secret"
POP3_NAME = "pop.tenant.invalid"
TOKEN_NAME = "token.tenant.invalid"


class FakeDns:
    """``getaddrinfo`` over a fixed table; remembers every name asked."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[AddrInfo]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_addrinfo(ip, port) for ip in self.table[host]]


def _addrinfo(ip: str, port: int) -> AddrInfo:
    if ":" in ip:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


def teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380) carrying ``client``, which it stores inverted."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64)
    value |= 0xFFFFFFFF ^ int(ipaddress.IPv4Address(client))
    return str(ipaddress.IPv6Address(value))


# -- the address classes -----------------------------------------------------------------

NON_PUBLIC = [
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "link-local"),  # the instance metadata service
    ("fe80::1", "link-local"),
    ("224.0.0.251", "multicast"),
    ("ff02::fb", "multicast"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),  # IPv6 unique local
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"),
    ("fec0::1", "site-local"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "special-purpose"),  # documentation
    ("198.18.0.1", "special-purpose"),  # benchmarking
    ("2001:db8::1", "special-purpose"),  # documentation
    ("::ffff:127.0.0.1", "loopback (IPv4-mapped)"),
    ("::ffff:10.0.0.1", "private (IPv4-mapped)"),
    ("64:ff9b::a9fe:a9fe", "link-local (NAT64)"),  # 169.254.169.254
    ("64:ff9b::a00:1", "private (NAT64)"),  # 10.0.0.1
    ("2002:c0a8:101::1", "private (6to4)"),  # 192.168.1.1
    ("2002:7f00:1::1", "loopback (6to4)"),
    (teredo("65.54.227.120", "10.0.0.1"), "private (Teredo)"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # IPv4-mapped: the public IPv4 address it stands for
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8, as an IPv6-only network reaches it
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize(("ip", "kind"), NON_PUBLIC)
def test_every_non_public_address_class_is_named(ip: str, kind: str) -> None:
    assert non_public_kind(ipaddress.ip_address(ip)) == kind


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert non_public_kind(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize(("ip", "kind"), NON_PUBLIC)
def test_a_host_resolving_to_a_non_public_address_is_refused(ip: str, kind: str) -> None:
    policy = AddressPolicy(resolve=FakeDns({POP3_NAME: [ip]}))
    with pytest.raises(AddressRefused) as caught:
        policy.addresses(POP3_NAME, 995, field="host")
    assert isinstance(caught.value, ConnectError)  # the run reports it as it reports a connect
    assert caught.value.field == "host"
    message = str(caught.value)
    assert message.startswith(f"mailbox secret field 'host': {POP3_NAME} resolves to ")
    assert f"{kind} address" in message
    assert "ALLOW_PRIVATE_HOSTS=true" in message


def test_a_literal_address_is_named_as_such() -> None:
    policy = AddressPolicy(resolve=FakeDns({"127.0.0.1": ["127.0.0.1"]}))
    with pytest.raises(AddressRefused, match=re.escape("'host': 127.0.0.1 is a loopback address")):
        policy.addresses("127.0.0.1", 110, field="host")


def test_one_non_public_address_among_public_ones_is_enough_to_refuse() -> None:
    # A name may answer with several addresses; any one of them could be the one connected.
    dns = FakeDns({POP3_NAME: ["8.8.8.8", "2606:4700:4700::1111", "10.9.8.7"]})
    with pytest.raises(AddressRefused, match=re.escape("resolves to 10.9.8.7, a private address")):
        AddressPolicy(resolve=dns).addresses(POP3_NAME, 995, field="host")


def test_public_addresses_are_returned_in_order_once_each_from_one_lookup() -> None:
    dns = FakeDns({POP3_NAME: ["8.8.8.8", "2606:4700:4700::1111", "8.8.8.8"]})
    found = AddressPolicy(resolve=dns).addresses(POP3_NAME, 995, field="host")
    assert [str(address.ip) for address in found] == ["8.8.8.8", "2606:4700:4700::1111"]
    assert [address.sockaddr[1] for address in found] == [995, 995]
    assert dns.asked == [POP3_NAME]


def test_allowing_private_hosts_lets_every_address_through() -> None:
    ips = ["127.0.0.1", "10.0.0.1", "fe80::1"]
    found = AddressPolicy(allow_private=True, resolve=FakeDns({POP3_NAME: ips})).addresses(
        POP3_NAME, 110, field="host"
    )
    assert [str(address.ip) for address in found] == ips


def test_an_unknown_name_fails_as_a_lookup_does() -> None:
    with pytest.raises(socket.gaierror):
        AddressPolicy(resolve=FakeDns({})).addresses(POP3_NAME, 110, field="host")


# -- the deployment's switch -----------------------------------------------------------

ENV = {"BUCKET_NAME": "b", "QUEUE_URL": "q"}


@pytest.mark.parametrize(
    ("value", "allowed"), [(None, False), ("", False), ("false", False), ("true", True)]
)
def test_private_hosts_are_refused_unless_the_environment_allows_them(
    value: str | None, allowed: bool
) -> None:
    env = ENV if value is None else {**ENV, "ALLOW_PRIVATE_HOSTS": value}
    assert Settings.from_env(env).allow_private_hosts is allowed


def test_a_switch_that_is_neither_true_nor_false_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ALLOW_PRIVATE_HOSTS must be true or false"):
        Settings.from_env({**ENV, "ALLOW_PRIVATE_HOSTS": "perhaps"})


# -- the POP3 connection ---------------------------------------------------------------


def pop3_secret(host: str, port: int, server: FakePop3Server) -> MailboxConfig:
    return MailboxConfig.from_secret(
        {
            "host": host,
            "port": port,
            "tls": "none",
            "username": server.user,
            "password": server.password,
        }
    )


def test_a_refused_host_is_never_connected_to() -> None:
    dns = FakeDns({POP3_NAME: ["127.0.0.1"]})
    with FakePop3Server() as server:
        mailbox = Pop3Mailbox(
            pop3_secret(POP3_NAME, server.port, server),
            timeout=5,
            address_policy=AddressPolicy(resolve=dns),
        )
        with pytest.raises(AddressRefused, match="loopback") as caught:
            mailbox.__enter__()
        assert server.connections == 0
    assert server.password not in str(caught.value)


def test_the_connection_goes_to_the_checked_address_not_to_the_name_again() -> None:
    # No real resolver knows the name: the session can only reach the server
    # through the address the policy resolved (and allowed) once.
    dns = FakeDns({POP3_NAME: ["127.0.0.1"]})
    with FakePop3Server() as server:
        policy = AddressPolicy(allow_private=True, resolve=dns)
        secret = pop3_secret(POP3_NAME, server.port, server)
        with Pop3Mailbox(secret, timeout=5, address_policy=policy) as mailbox:
            assert mailbox.list_messages() == []
        assert server.logins == 1
    assert dns.asked == [POP3_NAME]


def test_every_address_of_a_name_is_tried_in_turn() -> None:
    # The server listens on 127.0.0.1 only: 127.0.0.2 refuses, and the next address serves.
    with FakePop3Server() as server:
        dns = FakeDns({POP3_NAME: ["127.0.0.2", "127.0.0.1"]})
        policy = AddressPolicy(allow_private=True, resolve=dns)
        secret = pop3_secret(POP3_NAME, server.port, server)
        with Pop3Mailbox(secret, timeout=5, address_policy=policy) as mailbox:
            assert mailbox.list_messages() == []
        assert server.logins == 1


# -- the token endpoint ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


def oauth_settings(token_url: str) -> OAuthSettings:
    return OAuthSettings.from_secret(
        {
            "token_url": token_url,
            "client_id": "app",
            "client_secret": CLIENT_SECRET,
            "scope": MICROSOFT_365_SCOPE,
        }
    )


def test_a_plain_http_token_url_is_refused_unless_private_hosts_are_allowed() -> None:
    with OAuthTestServer() as server:
        server.add_client("app", CLIENT_SECRET, "alice", scope=MICROSOFT_365_SCOPE)
        settings = oauth_settings(server.token_url)
        with pytest.raises(AddressRefused, match="plain http://") as caught:
            TokenProvider(settings, timeout=5).token()
        assert server.token_requests == []  # the client secret went nowhere
        allowed = AddressPolicy(allow_private=True)
        assert TokenProvider(settings, timeout=5, address_policy=allowed).token()
    assert caught.value.field == "auth.token_url"
    assert CLIENT_SECRET not in str(caught.value)


@pytest.mark.parametrize("ip", ["10.0.0.7", "169.254.169.254", "::1"])
def test_a_token_url_resolving_to_a_private_address_is_refused(ip: str) -> None:
    dns = FakeDns({TOKEN_NAME: [ip]})
    provider = TokenProvider(
        oauth_settings(f"https://{TOKEN_NAME}/oauth2/token"),
        timeout=5,
        address_policy=AddressPolicy(resolve=dns),
    )
    with pytest.raises(AddressRefused) as caught:
        provider.token()
    assert caught.value.field == "auth.token_url"
    assert str(caught.value).startswith(
        f"mailbox secret field 'auth.token_url': {TOKEN_NAME} resolves to {ip},"
    )
    assert CLIENT_SECRET not in str(caught.value)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA, and a certificate it signed for the token endpoint's NAME only."""
    return make_certificates(
        tmp_path_factory.mktemp("netguard-certs"),
        ca_name="pop3-ingest netguard test CA",
        common_name=TOKEN_NAME,
        san=f"DNS:{TOKEN_NAME}",
    )


class HttpsTokenServer(OAuthTestServer):
    """The test token endpoint behind TLS."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        super().__init__()
        self.tls = tls

    def make_server(self) -> socketserver.TCPServer:
        httpd = super().make_server()
        httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        return httpd


@pytest.fixture
def https_token_server(certificates: Certificates) -> Iterator[HttpsTokenServer]:
    with HttpsTokenServer(certificates.server_context) as server:
        server.add_client("app", CLIENT_SECRET, "alice", scope=MICROSOFT_365_SCOPE)
        yield server


def https_provider(name: str, server: HttpsTokenServer, ca_pem: str) -> TokenProvider:
    port = server.address[1]
    return TokenProvider(
        oauth_settings(f"https://{name}:{port}/token"),
        timeout=5,
        context=ssl.create_default_context(cadata=ca_pem),
        address_policy=AddressPolicy(allow_private=True, resolve=FakeDns({name: ["127.0.0.1"]})),
    )


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(
    https_token_server: HttpsTokenServer, certificates: Certificates
) -> None:
    token = https_provider(TOKEN_NAME, https_token_server, certificates.ca_pem).token()
    grant = https_token_server.active(token)
    assert grant is not None
    assert grant.username == "alice"


def test_https_to_the_same_address_under_another_name_fails_verification(
    https_token_server: HttpsTokenServer, certificates: Certificates
) -> None:
    # Connected to the very same server: the certificate is checked against the name
    # in the secret, not against the address it resolved to.
    other = "other.tenant.invalid"
    with pytest.raises(TlsError, match="not trusted"):
        https_provider(other, https_token_server, certificates.ca_pem).token()
    assert https_token_server.token_requests == []
