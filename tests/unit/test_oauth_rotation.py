"""A refresh token the endpoint rotates (Microsoft 365 delegated access): kept for the
write-back, handed out once, and the access token shared with the new refresh token.

The token endpoint is the loopback server of tests/support/oauth_server.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.local_hosts import LOCAL_SERVERS
from tests.support.oauth_server import OAuthTestServer

from pop3_ingest.config import MICROSOFT_365_SCOPE, OAuthSettings
from pop3_ingest.integrations.oauth_tokens import TokenProvider, clear_token_cache, take_rotation
from pop3_ingest.integrations.secrets import with_refresh_token

CLIENT_ID = "delegated-app"
REFRESH_TOKEN = "0.rt-first-REFRESH-token"
DELEGATED = "https://outlook.office.com/POP.AccessAsUser.All offline_access"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_refresh_token(REFRESH_TOKEN, CLIENT_ID, "", "alice")
        srv.add_client("app-only", "cs-SECRET", "alice", scope=MICROSOFT_365_SCOPE)
        yield srv


def delegated(srv: OAuthTestServer, refresh_token: str = REFRESH_TOKEN) -> OAuthSettings:
    return OAuthSettings.from_secret(
        {
            "token_url": srv.token_url,
            "client_id": CLIENT_ID,
            "refresh_token": refresh_token,
            "scope": DELEGATED,
        }
    )


def provider(settings: OAuthSettings) -> TokenProvider:
    return TokenProvider(settings, address_policy=LOCAL_SERVERS)


def test_a_rotated_refresh_token_is_handed_out_once(server: OAuthTestServer) -> None:
    # GIVEN an endpoint that answers every refresh with a new refresh token
    server.refresh_rotation = "rotate"
    settings = delegated(server)
    # WHEN an access token is fetched
    provider(settings).token()
    # THEN the new refresh token is kept for the write-back, once
    rotation = take_rotation(settings)
    assert rotation is not None
    assert (rotation.old, rotation.new) == (REFRESH_TOKEN, server.issued_refresh_tokens[0])
    assert (rotation.token_url, rotation.client_id) == (server.token_url, CLIENT_ID)
    assert take_rotation(settings) is None
    assert REFRESH_TOKEN not in repr(rotation)
    assert rotation.new not in repr(rotation)


@pytest.mark.parametrize("answer", [None, "same"])
def test_no_new_refresh_token_is_no_rotation(server: OAuthTestServer, answer: str | None) -> None:
    server.refresh_rotation = answer
    settings = delegated(server)
    provider(settings).token()
    assert take_rotation(settings) is None


def test_a_client_credentials_grant_never_rotates(server: OAuthTestServer) -> None:
    server.respond_next(
        200, {"access_token": "at-1", "token_type": "Bearer", "refresh_token": "rt-offered"}
    )
    settings = OAuthSettings.from_secret(
        {
            "token_url": server.token_url,
            "client_id": "app-only",
            "client_secret": "cs-SECRET",
            "scope": MICROSOFT_365_SCOPE,
        }
    )
    assert provider(settings).token() == "at-1"
    assert take_rotation(settings) is None


def test_the_access_token_also_answers_for_the_new_refresh_token(server: OAuthTestServer) -> None:
    # The secret read again after the write-back names the new refresh token: no new
    # token request (and so no new rotation) for the access token still valid.
    server.refresh_rotation = "rotate"
    token = provider(delegated(server)).token()
    new = server.issued_refresh_tokens[0]
    assert provider(delegated(server, new)).token() == token
    assert len(server.token_requests) == 1


def test_a_refresh_token_that_cannot_be_stored_is_not_kept_and_not_logged(
    server: OAuthTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    unusable = "rt with spaces-" + "x" * 40
    server.respond_next(
        200,
        {
            "access_token": "at-2",
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": unusable,
        },
    )
    settings = delegated(server)
    with caplog.at_level(logging.WARNING):
        assert provider(settings).token() == "at-2"
    assert take_rotation(settings) is None
    assert "cannot be stored" in caplog.text
    assert unusable not in caplog.text
    assert REFRESH_TOKEN not in caplog.text


def test_clearing_the_cache_forgets_rotations(server: OAuthTestServer) -> None:
    server.refresh_rotation = "rotate"
    settings = delegated(server)
    provider(settings).token()
    clear_token_cache()
    assert take_rotation(settings) is None


# -- the secret with its refresh token replaced -------------------------------------------

SECRET: dict[str, Any] = {
    "host": "outlook.office365.com",
    "username": "support@contoso.com",
    "auth": {
        "type": "oauth2",
        "token_url": "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
        "client_id": CLIENT_ID,
        "refresh_token": REFRESH_TOKEN,
        "scope": DELEGATED,
    },
    "mailbox": "support",
    "delete": False,
}


@pytest.mark.parametrize("indent", [None, 2, 4])
def test_only_the_refresh_token_changes_layout_and_order_included(indent: int | None) -> None:
    text = json.dumps(SECRET, indent=indent)
    updated = with_refresh_token(text, "0.rt-second")
    assert updated == text.replace(REFRESH_TOKEN, "0.rt-second")
    assert list(json.loads(updated)) == list(SECRET)


def test_when_the_old_token_is_written_twice_the_json_is_rewritten_in_order() -> None:
    # The same text elsewhere (here a field of the secret): replacing text would change it too.
    secret = {**SECRET, "note": REFRESH_TOKEN}
    updated = json.loads(with_refresh_token(json.dumps(secret, indent=2), "0.rt-second"))
    assert updated["note"] == REFRESH_TOKEN
    assert updated["auth"]["refresh_token"] == "0.rt-second"
    assert list(updated) == list(secret)
    assert list(updated["auth"]) == list(secret["auth"])


def test_a_token_with_characters_json_escapes_is_replaced_exactly() -> None:
    secret = {**SECRET, "auth": {**SECRET["auth"], "refresh_token": 'a/b"c\\d'}}
    updated = with_refresh_token(json.dumps(secret), 'e"f/g')
    assert json.loads(updated)["auth"]["refresh_token"] == 'e"f/g'
