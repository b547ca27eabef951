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
from tests.integration.conftest import CapturedOutput, Harness
from tests.support.corpus import simple_message
from tests.support.dovecot import DovecotServer
from tests.support.fake_pop3 import FakeMessage, Fault
from tests.support.moto_server import AwsResources
from tests.support.oauth_server import OAuthTestServer, oauth_dovecot

from pop3_ingest.errors import AuthError, ConnectionLost, TlsError

from .conftest import HostileHarness, Outcome, messages

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


def attempt(harness: Harness) -> Outcome:
    try:
        return Outcome(harness.run(remaining_ms=60_000), None)
    except Exception as exc:
        return Outcome(None, exc)


def secret_json(harness: Harness, secret: dict[str, Any]) -> str:
    harness.configure(secret)
    return json.dumps(secret)  # exactly what Secrets Manager holds (moto_server.create_secret)


def test_successful_run(mailbox: Harness, everything: Everything) -> None:
    stored = secret_json(mailbox, mailbox.dovecot.secret(USER, mailbox="secrets"))
    outcome = everything.add(attempt(mailbox))
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 3
    everything.assert_clean(PASSWORD, document=stored)


def test_wrong_password(mailbox: Harness, everything: Everything) -> None:
    stored = secret_json(mailbox, mailbox.dovecot.secret(USER, password=WRONG_PASSWORD))
    outcome = everything.add(attempt(mailbox))
    assert isinstance(outcome.error, AuthError)
    assert "login failed" in everything.text()
    everything.assert_clean(WRONG_PASSWORD, PASSWORD, document=stored)


def test_untrusted_tls_certificate(mailbox: Harness, everything: Everything) -> None:
    secret = mailbox.dovecot.secret(USER, ca_cert=mailbox.dovecot.other_ca_pem)
    stored = secret_json(mailbox, secret)
    outcome = everything.add(attempt(mailbox))
    assert isinstance(outcome.error, TlsError)
    everything.assert_clean(PASSWORD, document=stored)


def test_untrusted_tls_certificate_with_starttls(mailbox: Harness, everything: Everything) -> None:
    secret = mailbox.dovecot.secret(USER, tls="starttls", ca_cert=mailbox.dovecot.other_ca_pem)
    stored = secret_json(mailbox, secret)
    outcome = everything.add(attempt(mailbox))
    assert isinstance(outcome.error, TlsError)
    everything.assert_clean(PASSWORD, document=stored)


def test_connection_reset_in_the_middle_of_retr(
    hostile: HostileHarness, everything: Everything
) -> None:
    fake = hostile.serve(messages(3), password=PASSWORD, faults=[Fault("RETR-body", "reset")])
    stored = secret_json(hostile, hostile.secret())
    outcome = everything.add(hostile.attempt())
    hostile.check(outcome)
    assert outcome.stopped == "connection_lost"
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
    from pop3_ingest.oauth import clear_token_cache

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

    outcome = everything.add(attempt(harness))
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 1

    # The cached token is revoked: Dovecot answers with the error challenge.
    for token in list(oauth.issued):
        oauth.revoke(token)
    server.deliver(USER, simple_message(2))
    failed = everything.add(attempt(harness))
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
    everything.add(attempt(mailbox))
    everything.assert_clean(PASSWORD, document=stored)
