"""``pop3-ingest oauth bootstrap --secret-id``: the refresh token from the device flow
(a loopback fake, tests/support/oauth_server.py) written into a secret in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.support.moto_server import AwsResources
from tests.support.oauth_server import OAuthTestServer

from pop3_ingest.config import MailboxConfig
from pop3_ingest_cli.errors import EXIT_CONFIG, EXIT_OK
from pop3_ingest_cli.main import main

pytestmark = pytest.mark.integration

CLIENT = "pop3-ingest-public-client"
# What the stack's placeholder secret looks like once its host and user are filled in.
PLACEHOLDER = {
    "host": "outlook.office365.com",
    "username": "support@contoso.com",
    "tls": "implicit",
    "password": "generated-PASSWORD-value",
    "mailbox": "support",
}


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_device_client(CLIENT, "support", ("pending", "approve"))
        yield srv


def bootstrap(srv: OAuthTestServer, secret_id: str, *extra: str) -> int:
    return main(
        [
            "oauth",
            "bootstrap",
            "--provider",
            "microsoft",
            "--client-id",
            CLIENT,
            "--device-url",
            srv.device_url,
            "--token-url",
            srv.token_url,
            "--secret-id",
            secret_id,
            *extra,
        ]
    )


def test_the_refresh_token_is_merged_into_the_secret_and_never_printed(
    aws: AwsResources, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a mailbox secret with an auth object from an earlier attempt
    auth = {"type": "oauth2", "client_id": "old-client", "refresh_token": "0.rt-OLD"}
    earlier = {**PLACEHOLDER, "auth": auth}
    name = aws.put_secret("pop3/support", json.dumps(earlier, indent=2))
    # WHEN the owner signs in
    assert bootstrap(server, name, "--json") == EXIT_OK
    out, err = capsys.readouterr()
    # THEN the secret holds the new refresh token, every other field as it was
    (token,) = server.issued_refresh_tokens
    text = aws.secretsmanager.get_secret_value(SecretId=name)["SecretString"]
    stored = json.loads(text)
    assert list(stored) == [*PLACEHOLDER, "auth"]
    assert {k: stored[k] for k in PLACEHOLDER} == PLACEHOLDER
    assert stored["auth"] == {
        "type": "oauth2",
        "client_id": CLIENT,
        "refresh_token": token,
        "token_url": server.token_url,
        "scope": "https://outlook.office.com/POP.AccessAsUser.All offline_access",
    }
    assert "\n" in text, "an indented secret stays indented"
    # AND the function would take it as it is
    assert MailboxConfig.from_secret(stored).oauth is not None
    # AND nothing printed the token
    document = json.loads(out)
    assert document["auth"]["refresh_token"] == "***"
    assert document["secret_id"] == name
    assert document["version_id"]
    assert token not in out + err
    assert "0.rt-OLD" not in out + err


def test_a_secret_the_function_would_refuse_is_refused_before_the_sign_in(
    aws: AwsResources, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = aws.put_secret("pop3/broken", {**PLACEHOLDER, "sasl": "plain"})
    assert bootstrap(server, name) == EXIT_CONFIG
    assert "'sasl'" in capsys.readouterr().err
    assert server.device_requests == [], "nobody was asked to sign in"


def test_a_secret_that_does_not_exist_is_exit_2(
    aws: AwsResources, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bootstrap(server, "pop3/missing") == EXIT_CONFIG
    assert "ResourceNotFoundException" in capsys.readouterr().err
    assert server.device_requests == []


def test_show_with_secret_id_writes_and_prints(
    aws: AwsResources, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = aws.put_secret("pop3/shown", PLACEHOLDER)
    assert bootstrap(server, name, "--show") == EXIT_OK
    (token,) = server.issued_refresh_tokens
    out = capsys.readouterr().out
    assert f"refresh token written into secret {name}" in out
    assert token in out
