"""A rotated refresh token, written back to the mailbox's own secret.

The token endpoint is the loopback OAuth2 server (tests/support/oauth_server.py)
answering refresh grants with a new refresh token, as Microsoft 365 does for
delegated access; Secrets Manager is moto; the mailbox is a real Dovecot that
checks each access token with that server. First the write-back itself
(:func:`write_back_refresh_token`), then through the real handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support.aws_hooks import error_response
from tests.support.corpus import simple_message
from tests.support.dovecot import DovecotServer
from tests.support.harness import CapturedOutput, Harness
from tests.support.moto_server import AwsResources
from tests.support.oauth_server import OAuthTestServer, oauth_dovecot

from pop3_ingest.errors import AuthError, SecretError
from pop3_ingest.integrations.oauth_tokens import Rotation, clear_token_cache
from pop3_ingest.integrations.secrets import (
    WriteBack,
    load_mailbox_config,
    write_back_refresh_token,
    writer_client,
)

pytestmark = pytest.mark.integration

USER = "alice"
CLIENT_ID = "delegated-app"
REFRESH_TOKEN = "0.rt-FIRST-refresh-token-value"
SECOND = "0.rt-SECOND-refresh-token-value"
SCOPE = "https://outlook.office.com/POP.AccessAsUser.All offline_access"


def auth_block(token_url: str, refresh_token: str = REFRESH_TOKEN) -> dict[str, str]:
    return {
        "type": "oauth2",
        "token_url": token_url,
        "client_id": CLIENT_ID,
        "refresh_token": refresh_token,
        "scope": SCOPE,
    }


def delegated_secret(token_url: str) -> dict[str, Any]:
    # Key order on purpose not alphabetical: it must survive the write-back.
    return {
        "username": USER,
        "host": "127.0.0.1",
        "auth": auth_block(token_url),
        "mailbox": "support-m365",
        "delete": True,
    }


def versions(aws: AwsResources, name: str) -> int:
    return len(aws.secretsmanager.list_secret_version_ids(SecretId=name)["Versions"])


def stored_secret(aws: AwsResources, name: str) -> str:
    return str(aws.secretsmanager.get_secret_value(SecretId=name)["SecretString"])


def metric_total(output: CapturedOutput, name: str) -> float:
    total = 0.0
    for record in output.records():
        if "_aws" in record and name in record:
            value = record[name]
            total += sum(value) if isinstance(value, list) else value
    return total


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


# -- the write-back ----------------------------------------------------------------------


@pytest.fixture
def held(aws: AwsResources) -> str:
    """A delegated mailbox's secret (pretty-printed), read as the handler reads it."""
    name = aws.put_secret(
        "mailbox-writeback", json.dumps(delegated_secret("https://login.example.com/t"), indent=2)
    )
    load_mailbox_config(name)
    return name


ROTATION = Rotation("https://login.example.com/t", CLIENT_ID, REFRESH_TOKEN, SECOND)


def test_the_rotated_token_replaces_the_old_one_and_nothing_else(
    aws: AwsResources, held: str
) -> None:
    before = stored_secret(aws, held)
    assert write_back_refresh_token(ROTATION, min_age=0) == {held: WriteBack.WRITTEN}
    after = stored_secret(aws, held)
    assert after == before.replace(REFRESH_TOKEN, SECOND)
    assert list(json.loads(after)) == ["username", "host", "auth", "mailbox", "delete"]
    assert versions(aws, held) == 2
    # The handler's next read (cached) names the new token.
    assert load_mailbox_config(held).oauth.refresh_token == SECOND  # type: ignore[union-attr]


def test_a_secret_changed_since_it_was_read_is_left_alone(aws: AwsResources, held: str) -> None:
    changed = delegated_secret("https://login.example.com/t")
    changed["auth"]["refresh_token"] = "0.rt-put-there-by-the-operator"
    aws.secretsmanager.put_secret_value(SecretId=held, SecretString=json.dumps(changed))
    assert write_back_refresh_token(ROTATION, min_age=0) == {held: WriteBack.CHANGED}
    assert json.loads(stored_secret(aws, held)) == changed


def test_a_secret_changed_recently_keeps_its_token(aws: AwsResources, held: str) -> None:
    # Secrets Manager asks for one PutSecretValue per secret every 10 minutes at most.
    assert write_back_refresh_token(ROTATION, min_age=3600) == {held: WriteBack.RECENT}
    assert versions(aws, held) == 1


def test_a_token_no_secret_was_read_with_goes_nowhere(aws: AwsResources, held: str) -> None:
    stranger = Rotation(ROTATION.token_url, CLIENT_ID, "0.rt-never-read", SECOND)
    assert write_back_refresh_token(stranger, min_age=0) == {"": WriteBack.UNKNOWN}
    assert versions(aws, held) == 1


def test_a_failed_write_is_a_secret_error_that_shows_neither_token(
    aws: AwsResources, held: str
) -> None:
    aws.secretsmanager.delete_secret(SecretId=held, ForceDeleteWithoutRecovery=True)
    (result,) = write_back_refresh_token(ROTATION, min_age=0).values()
    assert isinstance(result, SecretError)
    assert held in str(result)
    for token in (REFRESH_TOKEN, SECOND):
        assert token not in str(result)


# -- through the handler -------------------------------------------------------------------


@pytest.fixture
def oauth() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(expires_in=3600) as server:
        server.add_refresh_token(REFRESH_TOKEN, CLIENT_ID, "", USER)
        server.refresh_rotation = "rotate"
        yield server


@pytest.fixture
def server(make_dovecot: Callable[..., DovecotServer], oauth: OAuthTestServer) -> DovecotServer:
    dovecot = oauth_dovecot(make_dovecot, oauth)
    dovecot.add_user(USER, "unused password")
    for i in range(3):
        dovecot.deliver(USER, simple_message(i))
    return dovecot


@pytest.fixture
def mailbox(
    server: DovecotServer,
    oauth: OAuthTestServer,
    aws: AwsResources,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Harness, str]:
    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch, user=USER)
    secret = server.secret(USER, mailbox="support-m365")
    secret.pop("password")
    secret["auth"] = auth_block(oauth.token_url)
    name = harness.configure(json.dumps(secret, indent=2), REFRESH_TOKEN_WRITEBACK_SECONDS="0")
    return harness, name


def test_the_handler_writes_the_rotated_token_into_the_mailboxs_secret(
    mailbox: tuple[Harness, str],
    oauth: OAuthTestServer,
    server: DovecotServer,
    aws: AwsResources,
    output: CapturedOutput,
) -> None:
    harness, name = mailbox
    # WHEN a run logs in with a token the endpoint answered with a new refresh token
    assert harness.run()["deleted"] == 3
    # THEN the secret holds the new one, and only that changed
    (issued,) = oauth.issued_refresh_tokens
    secret = json.loads(stored_secret(aws, name))
    assert secret["auth"]["refresh_token"] == issued
    assert secret["auth"] == {**auth_block(oauth.token_url), "refresh_token": issued}
    assert metric_total(output, "RefreshTokenWrittenBack") == 1
    # AND the next run uses the access token still valid: no request, no new rotation
    server.deliver(USER, simple_message(7))
    assert harness.run()["deleted"] == 1
    assert len(oauth.token_requests) == 1
    assert versions(aws, name) == 2
    text = output.text()
    for token in (REFRESH_TOKEN, issued):
        assert token not in text


def test_the_same_refresh_token_is_not_written(
    mailbox: tuple[Harness, str], oauth: OAuthTestServer, aws: AwsResources
) -> None:
    harness, name = mailbox
    oauth.refresh_rotation = "same"
    assert harness.run()["deleted"] == 3
    assert versions(aws, name) == 1
    assert json.loads(stored_secret(aws, name))["auth"]["refresh_token"] == REFRESH_TOKEN


def test_a_failed_write_back_does_not_fail_the_run_and_shows_no_token(
    mailbox: tuple[Harness, str],
    oauth: OAuthTestServer,
    server: DovecotServer,
    aws: AwsResources,
    output: CapturedOutput,
) -> None:
    harness, name = mailbox
    client = writer_client()
    event = "before-send.secrets-manager.PutSecretValue"

    def refuse(request: Any, **_: Any) -> Any:
        return error_response(request.url, "secretsmanager", 400, "AccessDeniedException", "no")

    client.meta.events.register(event, refuse)
    try:
        summary = harness.run()
    finally:
        client.meta.events.unregister(event, refuse)
    # The mail is handled as ever; the secret keeps the token it had, which still works.
    assert summary["deleted"] == 3
    assert server.message_count(USER) == 0
    assert json.loads(stored_secret(aws, name))["auth"]["refresh_token"] == REFRESH_TOKEN
    assert metric_total(output, "RefreshTokenWriteBackFailed") == 1
    text = output.text()
    assert "AccessDeniedException" in text
    for token in (REFRESH_TOKEN, *oauth.issued_refresh_tokens):
        assert token not in text


def test_a_token_that_logs_nobody_in_is_not_written_back(
    mailbox: tuple[Harness, str],
    oauth: OAuthTestServer,
    server: DovecotServer,
    aws: AwsResources,
) -> None:
    harness, name = mailbox
    # The refresh token belongs to another user: Dovecot refuses the access token.
    oauth.add_refresh_token(REFRESH_TOKEN, CLIENT_ID, "", "mallory")
    with pytest.raises(AuthError):
        harness.run()
    assert oauth.issued_refresh_tokens, "the endpoint did rotate"
    assert versions(aws, name) == 1
    assert server.message_count(USER) == 3
