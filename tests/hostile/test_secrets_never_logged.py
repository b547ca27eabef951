"""No password, access token or secret JSON in anything a run writes, whatever happens.

Full handler runs (success, wrong password, untrusted TLS certificate, a reset
in the middle of RETR, a hostile server echoing the credentials back, OAuth2
logins), with everything captured: Powertools' log stream (which the core's
stdlib loggers share), stdout and stderr, the stdlib root logger (caplog, at
INFO: botocore logs response bodies at DEBUG, see the xfail below), our own
loggers at DEBUG, the summary, and every raised error with its traceback and
chained causes (``traceback.format_exception``). The secrets are searched for
as they are and as JSON or ``repr`` would escape them, and so are the base64
SASL strings that carry them.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.support.corpus import simple_message
from tests.support.dovecot import DovecotServer
from tests.support.fake_pop3 import FakeMessage, Fault
from tests.support.harness import (
    AFTER_A_BROKEN_MESSAGE,
    CapturedOutput,
    HandlerHarness,
    Harness,
    HostileHarness,
    Outcome,
    messages,
)
from tests.support.moto_server import AwsResources
from tests.support.oauth_server import OAuthTestServer, oauth_dovecot

from pop3_ingest.errors import AuthError, ConnectionLost, TlsError
from pop3_ingest.redaction import MIN_SECRET_RUN

pytestmark = pytest.mark.integration

# Characters that JSON and repr escape, so that escaped copies are looked for
# too, around a long run of letters and digits that no escaping changes (so
# that a copy escaped twice, JSON in JSON in a repr, is still found).
PASSWORD = 'Tr0ub4dorPassw0rd7731 "&" 3\\x é-pw'
WRONG_PASSWORD = 'Wr0ngGuess5521 "guess" \\ ü-pw'
CLIENT_SECRET = "cs-ClientS3cret8842-never-logged"
USER = "alice"


def variants(value: str, *, runs: bool = True) -> set[str]:
    """A value as it would look in plain text, in JSON (either way) and in a repr,
    and (``runs``) its long runs of letters and digits, the same however escaped."""
    found = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        repr(value.encode())[2:-1],
    }
    return found | set(re.findall(r"[A-Za-z0-9]{10,}", value)) if runs else found


def sasl_strings(username: str, secret: str, *, token: bool = False) -> set[str]:
    raw = f"user={username}\x01auth=Bearer {secret}\x01\x01" if token else f"\0{username}\0{secret}"
    return {base64.b64encode(raw.encode()).decode()}


@dataclass
class Everything:
    """All a run wrote or raised, as text."""

    output: CapturedOutput
    caplog: pytest.LogCaptureFixture
    aws: AwsResources
    extra: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> Outcome:
        if outcome.summary is not None:
            self.extra.append(json.dumps(outcome.summary, ensure_ascii=False))
            self.extra.append(repr(outcome.summary))
        if outcome.error is not None:
            error = outcome.error
            self.extra += [str(error), repr(error), repr(error.args)]
            self.extra.append("".join(traceback.format_exception(error)))
        return outcome

    def text(self) -> str:
        parts = [self.output.text(), self.caplog.text, *self.extra]
        # What the run left in S3 besides mail (run state, quarantine records) and SQS.
        for key, body in self.aws.objects().items():
            if not key.endswith(".eml"):
                parts.append(body.decode("utf-8", "replace"))
        parts += [json.dumps(p, ensure_ascii=False) for p in self.aws.receive_all()]
        return "\n".join(parts)

    def assert_clean(
        self, *secrets: str, document: str, sasl_user: str = USER, tokens: tuple[str, ...] = ()
    ) -> None:
        """No secret, token or the secret's JSON ``document`` in anything captured."""
        needles = variants(document, runs=False)
        for secret in secrets:
            needles |= variants(secret) | sasl_strings(sasl_user, secret)
        for token in tokens:
            needles |= variants(token) | sasl_strings(sasl_user, token, token=True)
        text = self.text()
        assert text.strip(), "nothing was captured: the capture is broken"
        found = sorted(n for n in needles if n and n in text)
        assert not found, f"secret material in the output: {found}"


@pytest.fixture
def everything(
    output: CapturedOutput, caplog: pytest.LogCaptureFixture, aws: AwsResources
) -> Iterator[Everything]:
    caplog.set_level(logging.INFO)
    # Our own loggers (Powertools' service logger and the package's) at DEBUG.
    names = ["pop3-ingest"] + [
        name for name in logging.root.manager.loggerDict if name.startswith("pop3_ingest")
    ]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield Everything(output=output, caplog=caplog, aws=aws)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def mailbox(
    make_dovecot: Callable[..., DovecotServer], aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> Harness:
    server = make_dovecot()
    server.add_user(USER, PASSWORD)
    for i in range(3):
        server.deliver(USER, simple_message(i))
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    return Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch)


def secret_json(harness: HandlerHarness, secret: dict[str, Any]) -> str:
    harness.configure(secret)
    return json.dumps(secret)  # exactly what Secrets Manager holds (moto_server.create_secret)


def test_successful_run(mailbox: Harness, everything: Everything) -> None:
    stored = secret_json(mailbox, mailbox.dovecot.secret(USER, mailbox="secrets"))
    outcome = everything.add(mailbox.attempt())
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 3
    everything.assert_clean(PASSWORD, document=stored)


def test_wrong_password(mailbox: Harness, everything: Everything) -> None:
    stored = secret_json(mailbox, mailbox.dovecot.secret(USER, password=WRONG_PASSWORD))
    outcome = everything.add(mailbox.attempt())
    assert isinstance(outcome.error, AuthError)
    assert "login failed" in everything.text()
    everything.assert_clean(WRONG_PASSWORD, PASSWORD, document=stored)


def test_untrusted_tls_certificate(mailbox: Harness, everything: Everything) -> None:
    secret = mailbox.dovecot.secret(USER, ca_cert=mailbox.dovecot.other_ca_pem)
    stored = secret_json(mailbox, secret)
    outcome = everything.add(mailbox.attempt())
    assert isinstance(outcome.error, TlsError)
    everything.assert_clean(PASSWORD, document=stored)


def test_untrusted_tls_certificate_with_starttls(mailbox: Harness, everything: Everything) -> None:
    secret = mailbox.dovecot.secret(USER, tls="starttls", ca_cert=mailbox.dovecot.other_ca_pem)
    stored = secret_json(mailbox, secret)
    outcome = everything.add(mailbox.attempt())
    assert isinstance(outcome.error, TlsError)
    everything.assert_clean(PASSWORD, document=stored)


def test_connection_reset_in_the_middle_of_retr(
    hostile: HostileHarness, everything: Everything
) -> None:
    fake = hostile.serve(messages(3), password=PASSWORD, faults=[Fault("RETR-body", "reset")])
    stored = secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    hostile.check(outcome)
    assert outcome.stopped in AFTER_A_BROKEN_MESSAGE
    assert outcome.summary is not None
    assert outcome.summary["abandoned_sessions"] >= 1
    assert fake.faults_applied
    everything.assert_clean(PASSWORD, document=stored)


def test_hostile_server_echoing_the_password(
    hostile: HostileHarness, everything: Everything
) -> None:
    def echo(session: Any, arg: str) -> bytes:
        return f"-ERR [AUTH] you said {arg}, didn't you? {arg}\r\n".encode()

    hostile.serve(messages(1), password=PASSWORD, replies={"PASS": echo})
    stored = secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, AuthError)
    assert "[AUTH]" in str(outcome.error)
    assert "you said" not in str(outcome.error)  # an answer to a credential is never shown

    # The same in an answer that is not even a status line.
    hostile.serve(
        messages(1),
        password=PASSWORD,
        replies={"PASS": lambda s, arg: f"{arg}\r\n".encode()},
    )
    secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, ConnectionLost)
    everything.assert_clean(PASSWORD, document=stored)


# -- OAuth2: the access token and the client secret ---------------------------------


@pytest.fixture
def oauth() -> Iterator[OAuthTestServer]:
    from pop3_ingest.integrations.oauth_tokens import clear_token_cache

    clear_token_cache()
    with OAuthTestServer(expires_in=3600) as server:
        server.add_client("secrets-app", CLIENT_SECRET, USER, scope="pop")
        yield server
    clear_token_cache()


def oauth_secret(
    host: str, port: int, tls: str, oauth: OAuthTestServer, **more: Any
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "tls": tls,
        "username": USER,
        "auth": {
            "token_url": oauth.token_url,
            "client_id": "secrets-app",
            "client_secret": CLIENT_SECRET,
            "scope": "pop",
        },
        **more,
    }


def test_oauth2_login_and_a_revoked_token(
    make_dovecot: Callable[..., DovecotServer],
    aws: AwsResources,
    monkeypatch: pytest.MonkeyPatch,
    oauth: OAuthTestServer,
    everything: Everything,
) -> None:
    server = oauth_dovecot(make_dovecot, oauth)
    server.add_user(USER, PASSWORD)
    server.deliver(USER, simple_message(1))
    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch)
    secret = oauth_secret("127.0.0.1", server.pop3s_port, "implicit", oauth, ca_cert=server.ca_pem)
    stored = secret_json(harness, secret)

    outcome = everything.add(harness.attempt())
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 1

    # The cached token is revoked: Dovecot answers with the error challenge.
    for token in list(oauth.issued):
        oauth.revoke(token)
    server.deliver(USER, simple_message(2))
    failed = everything.add(harness.attempt())
    assert isinstance(failed.error, AuthError)

    tokens = tuple(oauth.issued)
    assert tokens
    everything.assert_clean(CLIENT_SECRET, document=stored, tokens=tokens)


def test_hostile_server_echoing_the_xoauth2_string(
    hostile: HostileHarness, oauth: OAuthTestServer, everything: Everything
) -> None:
    def echo(session: Any, arg: str) -> bytes:
        return f"-ERR [AUTH] bad: {arg} {base64.b64decode(arg.split()[-1])!r}\r\n".encode()

    hostile.serve([FakeMessage(simple_message(1), b"u1")], replies={"AUTH": echo})
    secret = oauth_secret("127.0.0.1", hostile.fake.port, "none", oauth, sasl="xoauth2-oneline")
    stored = secret_json(hostile, secret)
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, AuthError)
    tokens = tuple(oauth.issued)
    assert tokens
    everything.assert_clean(CLIENT_SECRET, document=stored, tokens=tokens)


def test_even_with_root_logging_at_debug(mailbox: Harness, everything: Everything) -> None:
    everything.caplog.set_level(logging.DEBUG)
    stored = secret_json(mailbox, mailbox.dovecot.secret(USER))
    everything.add(mailbox.attempt())
    everything.assert_clean(PASSWORD, document=stored)


# -- pieces of a secret: no run of MIN_SECRET_RUN characters anywhere -----------------
#
# These secrets alternate letters or digits with punctuation that log text never
# holds, so any run of MIN_SECRET_RUN of their characters found in the output is
# a leak, not a coincidence. Base64 strings (AUTH PLAIN, XOAUTH2) are made of
# letters and digits that ids in log lines share by chance: they are looked for
# by runs of BASE64_RUN.

BASE64_RUN = 12
LONG_SECRET = "".join(
    "Qz7Xk2Vw9Lm4Rt8Np3Hs6Jd5Bf1Gc0Yq"[i % 32] + "~^|`;!=%"[i % 8] for i in range(60)
)
SHORT_SECRET = "k~7^Q|m`4;Z!"
# A bearer token (RFC 6750 characters) of the same kind.
TOKEN_SECRET = "".join("Tk9Qz7Xm4Rw8Lp2Vn6"[i % 18] + "~"[: i % 2] for i in range(48))


def leaked_runs(text: str, secret: str, k: int) -> list[str]:
    runs = {secret[i : i + k] for i in range(len(secret) - k + 1)}
    return sorted(run for run in runs if run in text)


def assert_no_runs(text: str, secret: str, k: int = MIN_SECRET_RUN) -> None:
    assert text.strip(), "nothing was captured: the capture is broken"
    found = leaked_runs(text, secret, k)
    assert not found, f"{len(found)} piece(s) of a secret in the output (not shown here)"


def login_failed_line(everything: Everything) -> str:
    for record in everything.output.records():
        if record.get("message") == "login failed":
            return json.dumps(record)
    raise AssertionError("no 'login failed' log line")


@pytest.mark.parametrize(
    ("secret", "echo"),
    [
        pytest.param(LONG_SECRET, lambda pw: pw[:100], id="long-cut-at-100"),
        pytest.param(LONG_SECRET, lambda pw: pw[40:75], id="long-middle-slice"),
        pytest.param(LONG_SECRET, lambda pw: f"{pw[:50]} and {pw[-9:]}", id="long-two-pieces"),
        pytest.param(SHORT_SECRET, lambda pw: pw[:-3], id="short-cut"),
        pytest.param(SHORT_SECRET, lambda pw: pw[2:9], id="short-middle-slice"),
    ],
)
def test_pieces_of_the_password_echoed_to_pass_are_never_shown(
    hostile: HostileHarness, everything: Everything, secret: str, echo: Callable[[str], str]
) -> None:
    def reply(session: Any, arg: str) -> bytes:
        return f"-ERR [AUTH] you said {echo(arg)}\r\n".encode()

    hostile.serve(messages(1), password=secret, replies={"PASS": reply})
    secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, AuthError)
    assert outcome.error.code == "AUTH"
    assert "[AUTH]" in str(outcome.error)  # the response code is kept
    assert "[AUTH]" in login_failed_line(everything)
    assert_no_runs(everything.text(), secret)


@pytest.mark.parametrize("secret", [LONG_SECRET, SHORT_SECRET], ids=["long", "short"])
def test_pieces_of_the_auth_plain_string_echoed_are_never_shown(
    hostile: HostileHarness, everything: Everything, secret: str
) -> None:
    plain = base64.b64encode(f"\0{USER}\0{secret}".encode()).decode()

    def reply(session: Any, arg: str) -> bytes:
        b64 = arg.split()[-1]
        raw = base64.b64decode(b64).decode()
        return f"-ERR [SYS/PERM] bad {b64[:100]} / {b64[8:40]} / {raw[2:60]!r}\r\n".encode()

    hostile.serve(
        messages(1),
        user=USER,
        password=secret,
        extra_capabilities=["SASL PLAIN"],
        replies={"AUTH": reply},
    )
    secret_json(hostile, hostile.secret(sasl="plain"))
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, AuthError)
    assert "[SYS/PERM]" in str(outcome.error)
    text = everything.text()
    assert_no_runs(text, secret)
    assert_no_runs(text, plain, BASE64_RUN)


def test_pieces_of_the_token_in_an_xoauth2_error_exchange_are_never_shown(
    hostile: HostileHarness, oauth: OAuthTestServer, everything: Everything
) -> None:
    oauth.respond_next(
        200, {"access_token": TOKEN_SECRET, "token_type": "Bearer", "expires_in": 3600}
    )
    challenge = {"status": TOKEN_SECRET[:30], "schemes": "bearer", "scope": TOKEN_SECRET[9:]}

    def error_challenge(session: Any, arg: str) -> bytes:
        return b"+ " + base64.b64encode(json.dumps(challenge).encode()) + b"\r\n"

    def final(session: Any, arg: str) -> bytes:  # the answer to the empty line
        return f"-ERR [AUTH] token {TOKEN_SECRET[5:40]} refused\r\n".encode()

    hostile.serve(
        [FakeMessage(simple_message(1), b"u1")],
        user=USER,
        replies={"AUTH": error_challenge, "": final},
    )
    secret = oauth_secret("127.0.0.1", hostile.fake.port, "none", oauth, sasl="xoauth2-oneline")
    secret_json(hostile, secret)
    outcome = everything.add(hostile.attempt())
    assert isinstance(outcome.error, AuthError)
    assert "[AUTH]" in str(outcome.error)
    text = everything.text()
    assert_no_runs(text, TOKEN_SECRET)
    xoauth2 = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN_SECRET}\x01\x01".encode())
    assert_no_runs(text, xoauth2.decode(), BASE64_RUN)


@pytest.mark.parametrize(
    ("replies", "code"),
    [
        pytest.param({"DELE": "-ERR [SYS/TEMP] try later, {pw}"}, "SYS/TEMP", id="DELE-refused"),
        pytest.param({"CAPA": "{pw}"}, None, id="CAPA-out-of-step"),
        pytest.param({"RETR": "-ERR [SYS/TEMP] cannot read {pw}"}, "SYS/TEMP", id="RETR-refused"),
    ],
)
def test_pieces_of_the_password_in_other_server_text_are_masked(
    hostile: HostileHarness,
    everything: Everything,
    replies: dict[str, str],
    code: str | None,
) -> None:
    piece = f"{LONG_SECRET[7:40]} {LONG_SECRET[-60:]}"
    hostile.serve(
        messages(2),
        password=LONG_SECRET,
        replies={verb: f"{line.format(pw=piece)}\r\n".encode() for verb, line in replies.items()},
    )
    secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    hostile.check(outcome)
    text = everything.text()
    assert_no_runs(text, LONG_SECRET)
    if code is not None:
        assert f"[{code}]" in text  # the server's text is masked, not dropped


def test_pieces_of_the_password_in_a_busy_greeting_are_masked(
    hostile: HostileHarness, everything: Everything
) -> None:
    hostile.serve(
        messages(1),
        password=LONG_SECRET,
        greeting=f"-ERR [IN-USE] locked by {LONG_SECRET[3:99]}\r\n".encode(),
    )
    secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    assert outcome.stopped == "busy"
    text = everything.text()
    assert "IN-USE" in text
    assert_no_runs(text, LONG_SECRET)


# -- OAuth2: rotated refresh tokens, a certificate's key, its signed assertions ---------

FIRST_REFRESH_TOKEN = "0.rt-FirstRefreshT0ken-never-logged"


def test_rotated_refresh_tokens_and_a_certificate_key(
    make_dovecot: Callable[..., DovecotServer],
    aws: AwsResources,
    monkeypatch: pytest.MonkeyPatch,
    oauth: OAuthTestServer,
    everything: Everything,
) -> None:
    from aws_lambda_powertools.utilities import parameters
    from tests.support.oauth_certificate import app_certificate

    server = oauth_dovecot(make_dovecot, oauth)
    server.add_user(USER, PASSWORD)
    server.deliver(USER, simple_message(1))
    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch)
    monkeypatch.setenv("REFRESH_TOKEN_WRITEBACK_SECONDS", "0")
    # A delegated mailbox: its refresh token rotates and is written back.
    oauth.add_refresh_token(FIRST_REFRESH_TOKEN, "delegated", "", USER)
    oauth.refresh_rotation = "rotate"
    delegated = oauth_secret(
        "127.0.0.1", server.pop3s_port, "implicit", oauth, ca_cert=server.ca_pem
    )
    delegated["auth"] = {
        "token_url": oauth.token_url,
        "client_id": "delegated",
        "refresh_token": FIRST_REFRESH_TOKEN,
    }
    stored = secret_json(harness, delegated)
    outcome = everything.add(harness.attempt())
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 1
    rotated = tuple(oauth.issued_refresh_tokens)
    assert rotated
    # A certificate the token endpoint does not know: the signed assertion is refused.
    cert = app_certificate("never-registered")
    with_key = {
        **delegated,
        "auth": {
            "token_url": oauth.token_url,
            "client_id": "cert-app",
            "scope": "pop",
            "client_assertion": {
                "private_key_pem": cert.private_key_pem,
                "x5t#S256": cert.x5t_s256,
            },
        },
    }
    stored_key = secret_json(harness, with_key)
    parameters.clear_caches()  # the handler reads the new secret now, not in 5 minutes
    failed = everything.add(harness.attempt())
    assert isinstance(failed.error, AuthError)
    assertions = tuple(
        f["client_assertion"] for f in oauth.token_requests if "client_assertion" in f
    )
    assert assertions
    tokens = (*oauth.issued, *assertions)
    everything.assert_clean(FIRST_REFRESH_TOKEN, *rotated, document=stored, tokens=tokens)
    everything.assert_clean(cert.private_key_pem, document=stored_key, tokens=tokens)
