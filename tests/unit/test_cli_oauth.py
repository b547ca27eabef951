"""``pop3-ingest oauth bootstrap``: the device code flow (RFC 8628) against a loopback
device and token endpoint (tests/support/oauth_server.py), never a real provider.

Writing into a secret (``--secret-id``) is in tests/integration/test_cli_oauth.py.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Iterator

import pytest
from tests.support.oauth_server import DEVICE_GRANT, OAuthTestServer

from pop3_ingest.errors import AuthError
from pop3_ingest.integrations.oauth_tokens import Reach
from pop3_ingest.netguard import AddressPolicy
from pop3_ingest_cli import oauth
from pop3_ingest_cli.errors import EXIT_AUTH, EXIT_CONFIG, EXIT_CONNECT, EXIT_OK
from pop3_ingest_cli.main import build_parser, main

CLIENT = "pop3-ingest-public-client"


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        yield srv


def argv(srv: OAuthTestServer, *extra: str, provider: str = "microsoft") -> list[str]:
    return [
        "oauth",
        "bootstrap",
        "--provider",
        provider,
        "--client-id",
        CLIENT,
        "--device-url",
        srv.device_url,
        "--token-url",
        srv.token_url,
        *extra,
    ]


def args_of(srv: OAuthTestServer, *extra: str, provider: str = "microsoft") -> argparse.Namespace:
    return build_parser().parse_args(argv(srv, *extra, provider=provider))


class Sleeps:
    """The waits the flow asked for; none of them is waited."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def issued(srv: OAuthTestServer) -> str:
    (token,) = srv.issued_refresh_tokens
    return token


# -- the flow ---------------------------------------------------------------------------


def test_show_prints_the_auth_object_after_the_sign_in(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a person who signs in at the first poll
    server.add_device_client(CLIENT, "alice", ("approve",))
    # WHEN the command runs with --show
    assert main(argv(server, "--show")) == EXIT_OK
    out, err = capsys.readouterr()
    # THEN the person was told where to go and what to type, on stderr
    assert f"open {server.url}/verify and enter the code WDJB-MJHT" in err
    # AND stdout holds the auth object the secret needs, refresh token included
    auth = json.loads(out)["auth"]
    assert auth == {
        "type": "oauth2",
        "token_url": server.token_url,
        "client_id": CLIENT,
        "scope": oauth.PROVIDERS["microsoft"].scope,
        "refresh_token": issued(server),
    }
    (request,) = server.device_requests
    assert request == {"client_id": CLIENT, "scope": oauth.PROVIDERS["microsoft"].scope}
    (poll,) = [form for form in server.token_requests if form["grant_type"] == DEVICE_GRANT]
    assert set(poll) == {"grant_type", "device_code", "client_id"}


def test_the_poll_honours_the_interval_and_slows_down_when_told(server: OAuthTestServer) -> None:
    server.add_device_client(
        CLIENT, "alice", ("pending", "slow_down", "pending", "approve"), interval=2
    )
    sleeps = Sleeps()
    outcome = oauth.bootstrap(args_of(server, "--show"), sleep=sleeps)
    assert outcome.code == EXIT_OK
    # RFC 8628 3.5: each slow_down adds 5 seconds to every later wait.
    assert sleeps.waits == [2, 2, 7, 7]


def test_without_an_interval_the_poll_waits_five_seconds(server: OAuthTestServer) -> None:
    server.add_device_client(CLIENT, "alice", ("pending", "approve"), interval=None)
    sleeps = Sleeps()
    assert oauth.bootstrap(args_of(server, "--show"), sleep=sleeps).code == EXIT_OK
    assert sleeps.waits == [5, 5]


@pytest.mark.parametrize(
    ("answers", "fragment"),
    [
        (("pending", "denied"), "declined"),
        (("expired",), "expired"),
        (("no_refresh",), "offline_access"),
    ],
)
def test_a_sign_in_that_does_not_end_in_a_refresh_token_is_exit_4(
    server: OAuthTestServer,
    capsys: pytest.CaptureFixture[str],
    answers: tuple[str, ...],
    fragment: str,
) -> None:
    server.add_device_client(CLIENT, "alice", answers)
    assert main(argv(server, "--show")) == EXIT_AUTH
    out, err = capsys.readouterr()
    assert fragment in err
    assert out == ""
    assert "0.rt-" not in out + err


def test_the_code_expires_on_our_side_too(server: OAuthTestServer) -> None:
    # The person never signs in and the endpoint keeps saying "pending".
    server.add_device_client(CLIENT, "alice", (), interval=3, expires_in=10)
    settings = oauth.bootstrap_of(args_of(server, "--show"))
    sleeps = Sleeps()
    reach = Reach(5.0, None, AddressPolicy(allow_private=True))
    flow = oauth.DeviceFlow(settings, reach, sleep=sleeps, clock=sleeps.clock)
    code = flow.start()
    with pytest.raises(AuthError, match="expired"):
        flow.wait(code)
    assert sleeps.waits == [3, 3, 3, 3]
    assert flow.polls == 4


def test_an_unknown_client_is_refused_at_the_device_endpoint(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(server, "--show")) == EXIT_AUTH
    err = capsys.readouterr().err
    assert "the device endpoint refused the request (HTTP 400, invalid_client" in err
    assert server.token_requests == []


def test_google_sends_the_client_secret_and_keeps_no_scope(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(oauth.CLIENT_SECRET_VARIABLE, "GOCSPX-client-SECRET")
    server.add_device_client(
        CLIENT,
        "bob",
        ("approve",),
        client_secret="GOCSPX-client-SECRET",
        uri_field="verification_url",
    )
    assert main(argv(server, "--json", provider="google")) == EXIT_CONFIG  # neither --show ...
    capsys.readouterr()
    assert main(argv(server, "--json", "--show", provider="google")) == EXIT_OK
    out, err = capsys.readouterr()
    assert f"open {server.url}/verify" in err  # Google's verification_url
    document = json.loads(out)
    assert document["auth"]["client_secret"] == "GOCSPX-client-SECRET"
    assert "scope" not in document["auth"]
    (request,) = server.device_requests
    assert request["scope"] == "https://mail.google.com/"


def test_google_refusing_the_gmail_scope_says_where_to_look(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # What Google's device endpoint may answer for https://mail.google.com/.
    server.add_device_client(CLIENT, "bob", refusal="invalid_scope")
    assert main(argv(server, "--show", provider="google")) == EXIT_AUTH
    err = capsys.readouterr().err
    assert "refused the scope" in err
    assert "docs/providers.md" in err
    assert server.token_requests == []


def test_json_masks_the_refresh_token_unless_shown(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_device_client(CLIENT, "alice", ("approve",))
    outcome = oauth.bootstrap(args_of(server, "--show"), sleep=Sleeps())
    assert outcome.document["auth"]["refresh_token"] == issued(server)
    assert oauth.masked(outcome.document["auth"])["refresh_token"] == "***"


def test_an_endpoint_that_cannot_be_reached_is_exit_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/device"
    command = ["oauth", "bootstrap", "--provider", "microsoft", "--client-id", CLIENT, "--show"]
    code = main([*command, "--device-url", dead, "--token-url", dead])
    assert code == EXIT_CONNECT
    assert "cannot reach 127.0.0.1" in capsys.readouterr().err


# -- the options -------------------------------------------------------------------------


def options(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(
        ["oauth", "bootstrap", "--client-id", CLIENT, "--show", *extra]
    )


def test_the_tenant_goes_into_microsofts_endpoints() -> None:
    settings = oauth.bootstrap_of(options("--provider", "microsoft", "--tenant", "contoso.com"))
    base = "https://login.microsoftonline.com/contoso.com/oauth2/v2.0"
    assert (settings.device_url, settings.token_url) == (f"{base}/devicecode", f"{base}/token")
    default = oauth.bootstrap_of(options("--provider", "microsoft"))
    assert "/organizations/" in default.token_url
    assert default.scope == "https://outlook.office.com/POP.AccessAsUser.All offline_access"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--provider", "google", "--tenant", "contoso.com"), "--tenant is for"),
        (("--provider", "microsoft", "--token-url", "http://login.example.com/t"), "--token-url"),
        (("--provider", "microsoft", "--device-url", "ftp://127.0.0.1/d"), "--device-url"),
        (("--provider", "microsoft", "--scope", " "), "--scope"),
    ],
)
def test_bad_options_are_exit_2_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], fragment: str
) -> None:
    code = main(["oauth", "bootstrap", "--client-id", CLIENT, "--show", *extra])
    assert code == EXIT_CONFIG
    assert fragment in capsys.readouterr().err


def test_nowhere_to_put_the_token_is_refused_before_the_sign_in(
    server: OAuthTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_device_client(CLIENT, "alice")
    assert main(argv(server)) == EXIT_CONFIG
    assert "--secret-id NAME" in capsys.readouterr().err
    assert server.device_requests == []


def test_the_endpoints_live_in_one_table() -> None:
    assert set(oauth.PROVIDERS) == {"google", "microsoft"}
    for provider in oauth.PROVIDERS.values():
        for url in (provider.device_url, provider.token_url):
            assert url.startswith("https://")
