"""SASL logins against a real Dovecot whose oauth2 passdb asks our loopback OAuth2 server.

Token from TokenProvider (client-credentials or refresh-token grant) -> poplib
POP3_SSL -> AUTH XOAUTH2 (two-step and one-line) -> STAT. A token Dovecot's
introspection calls inactive gets the error challenge, the empty line, -ERR.
"""

from __future__ import annotations

import poplib
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support.corpus import simple_message
from tests.support.dovecot import DovecotServer
from tests.support.local_hosts import LOCAL_SERVERS
from tests.support.oauth_server import OAuthTestServer, oauth_dovecot

from pop3_ingest.config import MICROSOFT_365_SCOPE, OAuthSettings
from pop3_ingest.integrations.oauth_tokens import TokenProvider, clear_token_cache
from pop3_ingest.pop3 import auth as sasl
from pop3_ingest.pop3.auth import SaslRejected

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = "correct horse battery staple"
CLIENT_ID = "pop3-ingest-app"
CLIENT_SECRET = "app-client-S3CRET"
REFRESH_TOKEN = "1//google-style-REFRESH"


@pytest.fixture
def oauth() -> Iterator[OAuthTestServer]:
    clear_token_cache()
    with OAuthTestServer(expires_in=3600) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET, USER, scope=MICROSOFT_365_SCOPE)
        server.add_refresh_token(REFRESH_TOKEN, "google-client", CLIENT_SECRET, USER)
        yield server
    clear_token_cache()


@pytest.fixture
def server(make_dovecot: Callable[..., DovecotServer], oauth: OAuthTestServer) -> DovecotServer:
    dovecot = oauth_dovecot(make_dovecot, oauth)
    dovecot.add_user(USER, PASSWORD)
    for i in range(3):
        dovecot.deliver(USER, simple_message(i))
    return dovecot


@pytest.fixture
def connect(server: DovecotServer) -> Iterator[Callable[[], poplib.POP3_SSL]]:
    clients: list[poplib.POP3_SSL] = []

    def factory() -> poplib.POP3_SSL:
        context = ssl.create_default_context(cadata=server.ca_pem)
        client = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=context, timeout=10)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def app_only_provider(oauth: OAuthTestServer) -> TokenProvider:
    settings = OAuthSettings.from_secret(
        {
            "token_url": oauth.token_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": MICROSOFT_365_SCOPE,
        }
    )
    return TokenProvider(settings, timeout=5, address_policy=LOCAL_SERVERS)


def test_dovecot_offers_xoauth2(connect: Callable[[], poplib.POP3_SSL]) -> None:
    client = connect()
    mechanisms = sasl.supported_mechanisms(client.capa())
    assert {"PLAIN", "XOAUTH2", "OAUTHBEARER"} <= mechanisms


@pytest.mark.parametrize("two_step", [True, False], ids=["two-step", "one-line"])
def test_xoauth2_with_client_credentials_token_logs_in(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer, two_step: bool
) -> None:
    token = app_only_provider(oauth).token()
    client = connect()
    assert sasl.auth_xoauth2(client, USER, token, two_step=two_step).startswith(b"+OK")
    assert client.stat()[0] == 3
    client.quit()
    assert oauth.introspections == [token]  # Dovecot asked our introspection endpoint


def test_cached_token_serves_several_logins(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer
) -> None:
    for two_step in (True, False, True):
        client = connect()
        sasl.auth_xoauth2(client, USER, app_only_provider(oauth).token(), two_step=two_step)
        assert client.stat()[0] == 3
        client.quit()
    assert len(oauth.token_requests) == 1


def test_xoauth2_with_refresh_token_grant(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer
) -> None:
    settings = OAuthSettings.from_secret(
        {
            "token_url": oauth.token_url,
            "client_id": "google-client",
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
        }
    )
    client = connect()
    sasl.auth_xoauth2(client, USER, TokenProvider(settings, address_policy=LOCAL_SERVERS).token())
    assert client.stat()[0] == 3
    client.quit()


@pytest.mark.parametrize("two_step", [True, False], ids=["two-step", "one-line"])
def test_rejected_token_gets_the_error_flow(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer, two_step: bool
) -> None:
    token = app_only_provider(oauth).token()
    oauth.revoke(token)  # introspection now answers {"active": false}
    client = connect()
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_xoauth2(client, USER, token, two_step=two_step)
    err = caught.value
    assert isinstance(err, poplib.error_proto)
    assert err.args[0].startswith(b"-ERR [AUTH]")
    assert err.status == "401"  # from Dovecot's base64 JSON error challenge
    assert token not in f"{err} {err!r}"
    # The empty line was sent and the -ERR read: the session is still in step.
    assert "SASL" in client.capa()


def test_fresh_token_after_a_refusal_logs_in(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer
) -> None:
    provider = app_only_provider(oauth)
    token = provider.token()
    oauth.revoke(token)
    with pytest.raises(SaslRejected):
        sasl.auth_xoauth2(connect(), USER, token)
    # The caller drops the refused token; the next one is fetched anew and works.
    # (Dovecot's per-IP auth penalty makes this second login take a few seconds.)
    provider.invalidate(token)
    fresh = provider.token()
    assert fresh != token
    client = connect()
    sasl.auth_xoauth2(client, USER, fresh)
    assert client.stat()[0] == 3


def test_token_for_another_user_is_refused(
    connect: Callable[[], poplib.POP3_SSL], oauth: OAuthTestServer, server: DovecotServer
) -> None:
    server.add_user("bob", "bobs password")
    client = connect()
    with pytest.raises(SaslRejected):
        sasl.auth_xoauth2(client, "bob", app_only_provider(oauth).token())


def test_auth_plain_logs_in(connect: Callable[[], poplib.POP3_SSL]) -> None:
    client = connect()
    assert sasl.auth_plain(client, USER, PASSWORD).startswith(b"+OK")
    assert client.stat()[0] == 3
    client.quit()


def test_auth_plain_wrong_password(connect: Callable[[], poplib.POP3_SSL]) -> None:
    client = connect()
    with pytest.raises(SaslRejected) as caught:
        sasl.auth_plain(client, USER, "wrong " + PASSWORD)
    assert caught.value.args[0].startswith(b"-ERR [AUTH]")
    assert PASSWORD not in str(caught.value)


def test_long_password_uses_the_two_step_plain_form(
    connect: Callable[[], poplib.POP3_SSL], server: DovecotServer
) -> None:
    password = "p" * 240  # AUTH PLAIN <b64> would pass 255 octets
    server.add_user("carol", password)
    client = connect()
    assert sasl.auth_plain(client, "carol", password).startswith(b"+OK")
    client.quit()


# -- through the real handler -------------------------------------------------


def test_handler_fetches_with_oauth2_client_credentials(
    server: DovecotServer, oauth: OAuthTestServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.harness import Harness

    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch, user=USER)
    secret = server.secret(USER, mailbox="m365")
    secret.pop("password")
    secret["auth"] = {
        "type": "oauth2",
        "token_url": oauth.token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": MICROSOFT_365_SCOPE,
    }
    harness.configure(secret)
    summary = harness.run()
    assert summary["deleted"] == 3
    assert server.message_count(USER) == 0
    assert len(oauth.token_requests) == 1
    # A second run reuses the cached token.
    server.deliver(USER, simple_message(9))
    assert harness.run()["deleted"] == 1
    assert len(oauth.token_requests) == 1


def test_handler_with_a_rejected_client_secret_is_a_clear_auth_error(
    server: DovecotServer,
    oauth: OAuthTestServer,
    aws: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.support.harness import Harness

    from pop3_ingest.errors import AuthError

    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch, user=USER)
    secret = server.secret(USER, mailbox="m365")
    secret.pop("password")
    secret["auth"] = {
        "type": "oauth2",
        "token_url": oauth.token_url,
        "client_id": CLIENT_ID,
        "client_secret": "not-the-secret-XYZ",
        "scope": MICROSOFT_365_SCOPE,
    }
    harness.configure(secret)
    with pytest.raises(AuthError) as info:
        harness.run()
    assert "not-the-secret-XYZ" not in str(info.value)
    out = capsys.readouterr()
    assert "not-the-secret-XYZ" not in out.out + out.err
    assert server.message_count(USER) == 3


def test_handler_fetches_with_a_certificate_credential(
    server: DovecotServer, oauth: OAuthTestServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Microsoft 365 app-only with a certificate: the token server verifies the signed
    # client assertion with the certificate's public key before it issues a token.
    from tests.support.harness import Harness
    from tests.support.oauth_certificate import app_certificate

    cert = app_certificate()
    oauth.add_certificate_client(
        "cert-app", cert.public_key, {"x5t#S256": cert.x5t_s256}, USER, MICROSOFT_365_SCOPE
    )
    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch, user=USER)
    secret = server.secret(USER, mailbox="m365-cert")
    secret.pop("password")
    secret["auth"] = {
        "type": "oauth2",
        "token_url": oauth.token_url,
        "client_id": "cert-app",
        "scope": MICROSOFT_365_SCOPE,
        "client_assertion": {
            "private_key_pem": cert.private_key_pem,
            "certificate_thumbprint": cert.sha256_hex,
        },
    }
    harness.configure(secret)
    assert harness.run()["deleted"] == 3
    (assertion,) = oauth.assertions
    assert assertion["claims"]["iss"] == "cert-app"
    assert server.message_count(USER) == 0
