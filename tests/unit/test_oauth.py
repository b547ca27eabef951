"""OAuth2 settings and access tokens: parsing, caching, expiry and clean errors.

The token endpoint is a real HTTP server on 127.0.0.1 (tests/support/oauth_server.py).
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.local_hosts import LOCAL_SERVERS
from tests.support.oauth_server import OAuthTestServer

from pop3_ingest.config import MICROSOFT_365_SCOPE, OAuthSettings
from pop3_ingest.errors import AuthError, ConnectError, SecretError
from pop3_ingest.integrations import oauth_tokens as oauth
from pop3_ingest.integrations.oauth_tokens import (
    TokenProvider,
    clear_token_cache,
    token_request_form,
)

CLIENT_SECRET = "cl1ent-S3CRET-value"
REFRESH_TOKEN = "1//refresh-TOKEN-value"
APP_ONLY: dict[str, Any] = {
    "token_url": "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
    "client_id": "00000000-1111-2222-3333-444444444444",
    "client_secret": CLIENT_SECRET,
    "scope": MICROSOFT_365_SCOPE,
}
GOOGLE: dict[str, Any] = {
    "token_url": "https://oauth2.googleapis.com/token",
    "client_id": "1234.apps.googleusercontent.com",
    "client_secret": CLIENT_SECRET,
    "refresh_token": REFRESH_TOKEN,
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_client("app", CLIENT_SECRET, "alice", scope=MICROSOFT_365_SCOPE)
        srv.add_refresh_token(REFRESH_TOKEN, "gclient", CLIENT_SECRET, "bob")
        yield srv


def app_settings(srv: OAuthTestServer, **changes: Any) -> OAuthSettings:
    data = {
        "token_url": srv.token_url,
        "client_id": "app",
        "client_secret": CLIENT_SECRET,
        "scope": MICROSOFT_365_SCOPE,
        **changes,
    }
    return OAuthSettings.from_secret({k: v for k, v in data.items() if v is not None})


def assert_no_secrets(exc: BaseException, *extra: str) -> None:
    text = f"{exc} {exc!r}"
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, *extra):
        assert secret not in text


# -- parsing the secret --------------------------------------------------------


def test_client_credentials_settings() -> None:
    settings = OAuthSettings.from_secret(APP_ONLY)
    assert settings.grant_type == "client_credentials"
    assert settings.scope == MICROSOFT_365_SCOPE
    assert settings.refresh_token is None
    assert token_request_form(settings) == {
        "grant_type": "client_credentials",
        "client_id": APP_ONLY["client_id"],
        "client_secret": CLIENT_SECRET,
        "scope": MICROSOFT_365_SCOPE,
    }


def test_type_oauth2_is_accepted() -> None:
    assert OAuthSettings.from_secret({**APP_ONLY, "type": "oauth2"}) == OAuthSettings.from_secret(
        APP_ONLY
    )


def test_refresh_token_settings() -> None:
    settings = OAuthSettings.from_secret(GOOGLE)
    assert settings.grant_type == "refresh_token"
    assert token_request_form(settings)["refresh_token"] == REFRESH_TOKEN
    assert "scope" not in token_request_form(settings)


def test_refresh_token_grant_may_carry_a_scope_and_omit_the_secret() -> None:
    data = {**GOOGLE, "scope": "https://mail.google.com/"}
    del data["client_secret"]
    settings = OAuthSettings.from_secret(data)
    assert token_request_form(settings) == {
        "grant_type": "refresh_token",
        "client_id": GOOGLE["client_id"],
        "refresh_token": REFRESH_TOKEN,
        "scope": "https://mail.google.com/",
    }


def test_repr_hides_secrets() -> None:
    for data in (APP_ONLY, GOOGLE):
        text = repr(OAuthSettings.from_secret(data))
        assert CLIENT_SECRET not in text
        assert REFRESH_TOKEN not in text
        assert data["client_id"] in text
    assert CLIENT_SECRET not in repr(TokenProvider(OAuthSettings.from_secret(APP_ONLY)))


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (without(APP_ONLY, "token_url"), "auth.token_url", "missing required field"),
        (without(APP_ONLY, "client_id"), "auth.client_id", "missing required field"),
        (without(APP_ONLY, "client_secret"), "auth.client_secret", "missing required field"),
        (without(APP_ONLY, "scope"), "auth.scope", "'auth.refresh_token'"),
        ({**APP_ONLY, "client_id": 42}, "auth.client_id", "must be a string, got int"),
        ({**APP_ONLY, "client_secret": ["x"]}, "auth.client_secret", "must be a string"),
        ({**APP_ONLY, "scope": ""}, "auth.scope", "must not be empty"),
        ({**GOOGLE, "refresh_token": True}, "auth.refresh_token", "must be a string, got bool"),
        ({**APP_ONLY, "client_secret": "a\nb"}, "auth.client_secret", "line breaks"),
        ({**APP_ONLY, "token_url": "http://login.example.com/t"}, "auth.token_url", "https://"),
        ({**APP_ONLY, "token_url": "ftp://login.example.com/t"}, "auth.token_url", "https://"),
        ({**APP_ONLY, "token_url": "login.example.com/token"}, "auth.token_url", "host"),
        ({**APP_ONLY, "token_url": "https://u:pw@login.example.com/t"}, "auth.token_url", "cred"),
        ({**APP_ONLY, "token_url": "https://login.example.com:99999/t"}, "auth.token_url", "URL"),
        ({**APP_ONLY, "type": "basic"}, "auth.type", 'must be "oauth2"'),
        ({**APP_ONLY, "clientsecret": "x"}, "auth.clientsecret", "unknown field(s): auth.client"),
    ],
)
def test_bad_settings_name_the_field(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SecretError) as caught:
        OAuthSettings.from_secret(data)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert_no_secrets(caught.value)


def test_not_an_object() -> None:
    with pytest.raises(SecretError) as caught:
        OAuthSettings.from_secret(["token_url"])
    assert caught.value.field == "auth"
    assert "JSON object" in str(caught.value)


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(SecretError) as caught:
        OAuthSettings.from_secret(without(APP_ONLY, "client_id"), prefix="oauth2")
    assert caught.value.field == "oauth2.client_id"


def test_bad_values_are_never_echoed() -> None:
    # A secret pasted into the wrong field must not end up in a log line.
    for data in (
        {**APP_ONLY, "unknown": CLIENT_SECRET},
        {**APP_ONLY, "token_url": CLIENT_SECRET},
        {**APP_ONLY, "client_secret": CLIENT_SECRET + "\r\n"},
        {**GOOGLE, "refresh_token": REFRESH_TOKEN + "\x00"},
    ):
        with pytest.raises(SecretError) as caught:
            OAuthSettings.from_secret(data)
        assert_no_secrets(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_plain_http_is_allowed_on_loopback_only(host: str) -> None:
    settings = OAuthSettings.from_secret({**APP_ONLY, "token_url": f"http://{host}:8080/token"})
    assert settings.token_url.startswith("http://")


# -- fetching and caching ------------------------------------------------------


def test_client_credentials_token_is_fetched_and_cached(server: OAuthTestServer) -> None:
    clock = FakeClock()
    provider = TokenProvider(app_settings(server), clock=clock, address_policy=LOCAL_SERVERS)
    token = provider.token()
    grant = server.active(token)
    assert grant is not None
    assert grant.username == "alice"
    assert server.token_requests == [
        {
            "grant_type": "client_credentials",
            "client_id": "app",
            "client_secret": CLIENT_SECRET,
            "scope": MICROSOFT_365_SCOPE,
        }
    ]
    # Another provider for the same settings (the next warm invocation) shares the cache.
    assert (
        TokenProvider(app_settings(server), clock=clock, address_policy=LOCAL_SERVERS).token()
        == token
    )
    assert len(server.token_requests) == 1


def test_refresh_token_grant(server: OAuthTestServer) -> None:
    settings = OAuthSettings.from_secret(
        {**GOOGLE, "token_url": server.token_url, "client_id": "gclient"}
    )
    token = TokenProvider(settings, address_policy=LOCAL_SERVERS).token()
    grant = server.active(token)
    assert grant is not None
    assert grant.username == "bob"
    assert server.token_requests[0]["grant_type"] == "refresh_token"
    assert server.token_requests[0]["refresh_token"] == REFRESH_TOKEN


def test_token_is_refetched_60s_before_expiry(server: OAuthTestServer) -> None:
    server.expires_in = 3600
    clock = FakeClock()
    provider = TokenProvider(app_settings(server), clock=clock, address_policy=LOCAL_SERVERS)
    first = provider.token()
    clock.now += 3600 - 60 - 1
    assert provider.token() == first
    clock.now += 1
    second = provider.token()
    assert second != first
    assert len(server.token_requests) == 2
    clock.now += 3539
    assert provider.token() == second


@pytest.mark.parametrize("expires_in", ["3600", 3600.0])
def test_expires_in_as_string_or_float(server: OAuthTestServer, expires_in: Any) -> None:
    server.expires_in = expires_in
    provider = TokenProvider(app_settings(server), clock=FakeClock(), address_policy=LOCAL_SERVERS)
    assert provider.token() == provider.token()
    assert len(server.token_requests) == 1


@pytest.mark.parametrize("expires_in", [None, 60, 30, "soon"])
def test_unknown_or_short_lifetime_is_not_cached(server: OAuthTestServer, expires_in: Any) -> None:
    server.expires_in = expires_in
    provider = TokenProvider(app_settings(server), clock=FakeClock(), address_policy=LOCAL_SERVERS)
    assert provider.token() != provider.token()
    assert len(server.token_requests) == 2


def test_cache_is_per_client_scope_and_refresh_token(server: OAuthTestServer) -> None:
    server.add_client("other", CLIENT_SECRET, "carol")
    server.add_refresh_token("another-refresh", "gclient", CLIENT_SECRET, "dave")
    google = {**GOOGLE, "token_url": server.token_url, "client_id": "gclient"}
    settings = [
        app_settings(server),
        app_settings(server, client_id="other"),
        app_settings(server, client_id="other", scope="https://outlook.office.com/.default"),
        OAuthSettings.from_secret(google),
        OAuthSettings.from_secret({**google, "refresh_token": "another-refresh"}),
    ]
    tokens = {TokenProvider(s, address_policy=LOCAL_SERVERS).token() for s in settings}
    assert len(tokens) == len(settings)
    again = {TokenProvider(s, address_policy=LOCAL_SERVERS).token() for s in settings}
    assert again == tokens  # all cached now
    assert len(server.token_requests) == len(settings)
    # The cache key holds a digest, never the refresh token itself.
    assert REFRESH_TOKEN not in repr(oauth._cache)


def test_concurrent_callers_share_one_fetch(server: OAuthTestServer) -> None:
    server.token_delay_s = 0.2
    settings = app_settings(server)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        token = TokenProvider(settings, address_policy=LOCAL_SERVERS).token()
        with lock:
            results.append(token)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 8
    assert len(set(results)) == 1
    assert len(server.token_requests) == 1


def test_invalidate_drops_the_cached_token(server: OAuthTestServer) -> None:
    provider = TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS)
    first = provider.token()
    provider.invalidate("not-the-cached-one")
    assert provider.token() == first
    provider.invalidate(first)
    assert provider.token() != first
    assert len(server.token_requests) == 2


def test_clear_token_cache(server: OAuthTestServer) -> None:
    provider = TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS)
    first = provider.token()
    clear_token_cache()
    assert provider.token() != first


# -- errors --------------------------------------------------------------------


def test_wrong_client_secret_is_an_auth_error(server: OAuthTestServer) -> None:
    provider = TokenProvider(
        app_settings(server, client_secret="wrong-" + CLIENT_SECRET), address_policy=LOCAL_SERVERS
    )
    with pytest.raises(AuthError) as caught:
        provider.token()
    message = str(caught.value)
    assert "HTTP 401 invalid_client: client authentication failed" in message
    assert "client 'app'" in message
    assert server.token_url in message
    assert_no_secrets(caught.value, "wrong-" + CLIENT_SECRET)


def test_revoked_refresh_token_is_an_auth_error(server: OAuthTestServer) -> None:
    settings = OAuthSettings.from_secret(
        {**GOOGLE, "token_url": server.token_url, "refresh_token": "1//09xQZkTv-7LdW"}
    )
    with pytest.raises(AuthError) as caught:
        TokenProvider(settings, address_policy=LOCAL_SERVERS).token()
    assert "HTTP 400 invalid_grant: refresh token unknown or revoked" in str(caught.value)
    assert_no_secrets(caught.value, "1//09xQZkTv-7LdW")


def test_error_description_is_sanitized(server: OAuthTestServer) -> None:
    server.respond_next(
        400,
        {
            "error": "invalid_request",
            "error_description": f"bad secret {CLIENT_SECRET}\r\ninjected: line " + "x" * 1000,
        },
    )
    with pytest.raises(AuthError) as caught:
        TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS).token()
    message = str(caught.value)
    assert "invalid_request: bad secret ***" in message
    assert "\r" not in message
    assert "\n" not in message
    assert len(message) < 600
    assert_no_secrets(caught.value)


def test_rejection_without_json_body(server: OAuthTestServer) -> None:
    server.respond_next(403, b"<html>Forbidden</html>")
    with pytest.raises(AuthError) as caught:
        TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS).token()
    assert "HTTP 403" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_and_throttling_are_connect_errors(
    server: OAuthTestServer, status: int
) -> None:
    server.respond_next(status, {"error": "temporarily_unavailable"})
    with pytest.raises(ConnectError) as caught:
        TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS).token()
    assert f"HTTP {status} temporarily_unavailable" in str(caught.value)
    assert_no_secrets(caught.value)


def test_timeout_is_a_connect_error(server: OAuthTestServer) -> None:
    server.token_delay_s = 1.0
    with pytest.raises(ConnectError) as caught:
        TokenProvider(app_settings(server), timeout=0.2, address_policy=LOCAL_SERVERS).token()
    assert "did not answer within 0.2s" in str(caught.value)
    assert_no_secrets(caught.value)


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    settings = OAuthSettings.from_secret({**APP_ONLY, "token_url": f"http://127.0.0.1:{port}/t"})
    with pytest.raises(ConnectError) as caught:
        TokenProvider(settings, timeout=2, address_policy=LOCAL_SERVERS).token()
    assert "cannot reach token endpoint" in str(caught.value)
    assert_no_secrets(caught.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "without a JSON token response"),
        (b"[]", "without a JSON token response"),
        (b'{"token_type": "Bearer"}', "without an access_token"),
        (b'{"access_token": "SECRET-ACCESS-TOKEN", "token_type": "mac"}', "'mac' token"),
        (b'{"access_token": "SECRET ACCESS\\r\\nTOKEN"}', "not a valid bearer token"),
    ],
)
def test_unusable_token_responses(server: OAuthTestServer, body: bytes, fragment: str) -> None:
    server.respond_next(200, body)
    with pytest.raises(AuthError) as caught:
        TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS).token()
    assert fragment in str(caught.value)
    assert_no_secrets(caught.value, "SECRET-ACCESS-TOKEN", "SECRET ACCESS")


def test_access_token_echoed_in_token_type_is_masked(server: OAuthTestServer) -> None:
    server.respond_next(200, {"access_token": "abcSECRETdef", "token_type": "abcSECRETdef"})
    with pytest.raises(AuthError) as caught:
        TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS).token()
    assert_no_secrets(caught.value, "abcSECRETdef")


def test_redirects_are_not_followed() -> None:
    hits: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/token"
        settings = OAuthSettings.from_secret({**APP_ONLY, "token_url": url})
        with pytest.raises(AuthError) as caught:
            TokenProvider(settings, address_policy=LOCAL_SERVERS).token()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "redirected" in str(caught.value)
    assert hits == ["/token"]  # the client secret was not posted anywhere else


def test_failures_are_not_cached(server: OAuthTestServer) -> None:
    server.respond_next(503, {"error": "temporarily_unavailable"})
    provider = TokenProvider(app_settings(server), address_policy=LOCAL_SERVERS)
    with pytest.raises(ConnectError):
        provider.token()
    assert provider.token()
    assert len(server.token_requests) == 2
