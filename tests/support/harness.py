"""Running the real fetch handler in tests: one mailbox, its secret, one call at a time.

- :data:`EVENT`: the scheduled event the handler gets.
- :class:`HandlerHarness`: a secret and the function's environment for one
  mailbox, a handler call (:meth:`~HandlerHarness.run`, or
  :meth:`~HandlerHarness.attempt` that keeps an exception as an :class:`Outcome`),
  and what landed in S3. :class:`Harness` serves the mailbox from a real
  Dovecot; :class:`HostileHarness` from a :class:`FakePop3Server`, and its
  :meth:`~HostileHarness.check` says no crash and nothing deleted that is not
  stored byte for byte.
- :func:`invoke`: one call after which the process is "frozen" (:class:`SlowAws`).
- :class:`CapturedOutput`: everything a run wrote (JSON log lines, EMF blobs).
- :func:`require`: a server a test needs is missing: skip here, fail in CI.

The handler is imported inside the functions, after the ``moto`` fixture has
set the Powertools environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import poplib
import ssl
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from tests.support.corpus import simple_message
from tests.support.dovecot import DovecotServer
from tests.support.fake_pop3 import FakeMessage, FakePop3Server
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

if TYPE_CHECKING:
    from tests.support.aws_hooks import SlowAws

# The scheduled event the tests invoke the handler with (EventBridge's shape).
EVENT: dict[str, Any] = {
    "version": "0",
    "id": "5a1c2f2e-0000-4000-8000-000000000001",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-26T12:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/pop3-ingest-schedule"],
    "detail": {},
}

# The hostile mailbox: its name (the secret's "mailbox") and the fake server's password.
MAILBOX = "hostile"
PASSWORD = "fake-pw-Qx7!vZ"
# A line broken while a message is read counts against that message, and a new
# session goes on behind it; breaking again and again ends the run after a few
# sessions ("repeated_failures"). Either way that session committed nothing.
AFTER_A_BROKEN_MESSAGE = ("completed", "repeated_failures")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(missing: str | None) -> None:
    """Go on when nothing is ``missing``; else skip, or fail in CI (a broken pipeline)."""
    if missing is None:
        return
    if in_ci():
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def messages(count: int, start: int = 1) -> list[FakeMessage]:
    """Distinct small messages with well-formed UIDLs, for a fake maildrop."""
    return [FakeMessage(simple_message(i), b"uidl-%04d" % i) for i in range(start, start + count)]


@dataclass
class Outcome:
    """What one handler run gave: a summary, or the error it raised."""

    summary: dict[str, Any] | None
    error: BaseException | None

    @property
    def stopped(self) -> str | None:
        return None if self.summary is None else str(self.summary["stopped"])


@dataclass(kw_only=True)
class HandlerHarness:
    """One mailbox wired to the fetch handler: configure, run, look at what was stored."""

    aws: AwsResources
    monkeypatch: pytest.MonkeyPatch
    user: str = "alice"

    def configure(self, secret: dict[str, Any] | str, **env: str) -> str:
        """Store the mailbox secret and set the function's environment; returns the secret id."""
        name = self.aws.put_secret(f"mailbox-{self.user}", secret)
        for key, value in {**self.aws.function_env(name), **env}.items():
            self.monkeypatch.setenv(key, value)
        return name

    def run(
        self,
        remaining_ms: int = 120_000,
        event: dict[str, Any] | None = None,
        context: FakeLambdaContext | None = None,
    ) -> Any:
        """Call the handler once, as Lambda would."""
        from pop3_ingest.handlers.fetch import lambda_handler

        context = context or FakeLambdaContext(remaining_ms=remaining_ms)
        return lambda_handler(dict(event or EVENT), context)

    def attempt(
        self, remaining_ms: int = 60_000, context: FakeLambdaContext | None = None
    ) -> Outcome:
        """Run the handler once; an exception is kept, not raised."""
        try:
            return Outcome(self.run(remaining_ms=remaining_ms, context=context), None)
        except Exception as exc:
            return Outcome(None, exc)

    def mail_keys(self) -> list[str]:
        """Stored messages only (not the run state or quarantine records)."""
        return [key for key in self.aws.keys() if "/_" not in key]

    def mail_objects(self) -> dict[str, bytes]:
        return {k: v for k, v in self.aws.objects().items() if "/_" not in k}

    def key_for(self, uidl: str, mailbox: str) -> str:
        from pop3_ingest.domain.message import object_key

        return object_key("mail/", mailbox, uidl)


@dataclass(kw_only=True)
class Harness(HandlerHarness):
    """A :class:`HandlerHarness` whose mailbox a real Dovecot serves."""

    dovecot: DovecotServer

    def server_listing(self) -> list[tuple[str, int]]:
        """(UIDL, size) of every message, read with plain poplib (nothing deleted)."""
        context = ssl.create_default_context(cadata=self.dovecot.ca_pem)
        client = poplib.POP3_SSL("127.0.0.1", self.dovecot.pop3s_port, context=context)
        try:
            client.user(self.user)
            client.pass_(self.dovecot.users[self.user])
            listing = []
            sizes = dict(line.split() for line in client.list()[1])
            for line in client.uidl()[1]:
                number, uidl = line.split()
                listing.append((uidl.decode(), int(sizes[number])))
            return listing
        finally:
            client.quit()


@dataclass(kw_only=True)
class HostileHarness(HandlerHarness):
    """A :class:`HandlerHarness` whose mailbox is a :class:`FakePop3Server`."""

    output: CapturedOutput | None = None
    servers: list[FakePop3Server] = field(default_factory=list)

    @property
    def fake(self) -> FakePop3Server:
        return self.servers[-1]

    def serve(self, mail: list[FakeMessage], **options: Any) -> FakePop3Server:
        """Start a fake server with this maildrop and point the function's secret at it."""
        options.setdefault("password", PASSWORD)
        server = FakePop3Server(mail, **options).start()
        self.servers.append(server)
        self.configure(self.secret())
        from aws_lambda_powertools.utilities import parameters

        clear: Callable[[], None] = parameters.clear_caches  # untyped upstream
        clear()  # the secret changed (a new port)
        return server

    def secret(self, **overrides: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.fake.port,
            "tls": "none",
            "username": self.fake.user,
            "password": self.fake.password,
            "mailbox": MAILBOX,
        } | overrides

    def stored(self) -> dict[str, bytes]:
        """The mail objects (not run state or quarantine records)."""
        return {k: v for k, v in self.aws.objects(f"mail/{MAILBOX}/").items() if k.endswith(".eml")}

    def check(self, outcome: Outcome) -> None:
        """No crash, and nothing deleted that is not stored."""
        from pop3_ingest.errors import Pop3IngestError

        if outcome.error is not None:
            shown = "".join(traceback.format_exception(outcome.error))
            assert isinstance(outcome.error, Pop3IngestError), shown
        else:
            assert isinstance(outcome.summary, dict)
        stored = set(self.stored().values())
        for server in self.servers:
            for message in server.committed:
                assert message.body in stored, f"deleted but not stored: {message.uidl!r}"
            assert not server.errors, server.errors

    def records(self) -> list[dict[str, Any]]:
        assert self.output is not None
        return self.output.records()

    def logged(self, *fragments: str, levels: tuple[str, ...] = ("WARNING", "ERROR")) -> str:
        """The text of a log line at one of ``levels`` that holds every fragment."""
        lines = []
        for record in self.records():
            if record.get("level") not in levels:
                continue
            text = " ".join(str(record.get(k, "")) for k in ("message", "error", "reason"))
            lines.append(text)
            if all(f in text for f in fragments):
                return text
        raise AssertionError(f"no {levels} log line with {fragments}; got:\n" + "\n".join(lines))

    def close(self) -> None:
        for server in self.servers:
            server.close()


# -- a call after which the process is frozen ---------------------------------------


class DeadlineContext(FakeLambdaContext):
    """A Lambda context whose deadline can be brought forward while the handler runs."""

    def expire_in(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds


@dataclass
class Invocation:
    """One handler call: its outcome, and the Lambda time left when it returned."""

    outcome: Outcome
    remaining_ms: int


def invoke(
    hostile: HandlerHarness, slow: SlowAws, context: FakeLambdaContext | None = None
) -> Invocation:
    """Call the real handler once; then the process is "frozen" (see :class:`SlowAws`)."""
    context = context or DeadlineContext(remaining_ms=60_000)
    outcome = hostile.attempt(context=context)
    remaining = context.get_remaining_time_in_millis()
    slow.freeze()
    return Invocation(outcome, remaining)


def state_saved(hostile: HandlerHarness) -> bool:
    """Whether the mailbox's run state is in S3."""
    return any("/_state/" in key or key.startswith("_state/") for key in hostile.aws.keys())


# -- what a run wrote ------------------------------------------------------------


def repair_log_stream() -> logging.StreamHandler[Any]:
    """The handler's log handler, writing to a stream that is still open.

    Powertools' handler keeps the stdout of the test that first imported the
    handler; when that was a capsys stream it is closed by now, and writing to
    it fails: point it back at the real stdout.
    """
    from pop3_ingest.handlers.fetch import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    if getattr(handler.stream, "closed", False):
        handler.stream = sys.stdout
    return handler


@dataclass
class CapturedOutput:
    """Everything a run wrote: JSON log lines and EMF metric blobs."""

    logs: io.StringIO
    capsys: pytest.CaptureFixture[str]
    printed: str = ""

    def text(self) -> str:
        out = self.capsys.readouterr()
        self.printed += out.out + out.err
        return self.logs.getvalue() + self.printed

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]


@contextlib.contextmanager
def captured_output(capsys: pytest.CaptureFixture[str]) -> Iterator[CapturedOutput]:
    """The handler's log handler (shared by the core's loggers) and stdout, captured."""
    handler = repair_log_stream()
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield CapturedOutput(logs=stream, capsys=capsys)
    finally:
        if previous is not None:
            handler.setStream(previous)
