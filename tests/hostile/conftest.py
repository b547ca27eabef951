"""The real handler against the scripted fake POP3 server and moto over HTTP.

Builds on ``tests/integration/conftest.py``: its :class:`Harness` (secret,
environment, handler call) and its ``output`` fixture (every log line) are
imported, not copied. Each hostile case ends with :meth:`HostileHarness.check`:
no crash (a summary, or one of the package's own errors), and nothing the
server deleted at QUIT that is not stored byte for byte in S3.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from tests.integration.conftest import CapturedOutput, Harness, output
from tests.support.corpus import simple_message
from tests.support.fake_pop3 import FakeMessage, FakePop3Server
from tests.support.moto_server import AwsResources, MotoServer

from pop3_ingest.errors import Pop3IngestError

__all__ = ["HostileHarness", "Outcome", "hostile", "messages", "output"]

# A line broken while a message is read counts against that message, and a new
# session goes on behind it; breaking again and again ends the run after a few
# sessions ("repeated_failures"). Either way that session committed nothing.
AFTER_A_BROKEN_MESSAGE = ("completed", "repeated_failures")

MAILBOX = "hostile"
PASSWORD = "fake-pw-Qx7!vZ"


def messages(count: int, start: int = 1) -> list[FakeMessage]:
    """Distinct small messages with well-formed UIDLs."""
    return [FakeMessage(simple_message(i), b"uidl-%04d" % i) for i in range(start, start + count)]


@dataclass
class Outcome:
    """What one handler run gave: a summary, or the error it raised."""

    summary: dict[str, Any] | None
    error: BaseException | None

    @property
    def stopped(self) -> str | None:
        return None if self.summary is None else str(self.summary["stopped"])


@dataclass
class HostileHarness(Harness):
    """A :class:`Harness` whose mailbox is a :class:`FakePop3Server`."""

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

        parameters.clear_caches()  # the secret changed (a new port)
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

    def attempt(self, remaining_ms: int = 60_000) -> Outcome:
        """Run the handler once; an exception is kept, not raised."""
        try:
            return Outcome(self.run(remaining_ms=remaining_ms), None)
        except Exception as exc:
            return Outcome(None, exc)

    def stored(self) -> dict[str, bytes]:
        """The mail objects (not run state or quarantine records)."""
        return {k: v for k, v in self.aws.objects(f"mail/{MAILBOX}/").items() if k.endswith(".eml")}

    def check(self, outcome: Outcome) -> None:
        """No crash, and nothing deleted that is not stored."""
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


@pytest.fixture(autouse=True)
def _usable_log_stream(moto: MotoServer) -> Iterator[None]:
    """Powertools' handler keeps the stdout of the test that first imported the app.

    When that was a capsys stream it is closed by now, and the ``output``
    fixture fails flushing it; point the handler back at the real stdout.
    """
    from pop3_ingest.handlers.fetch import logger  # after `moto` has set the Powertools env

    def repair() -> None:
        handler = logger.registered_handler
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            handler.stream = sys.stdout

    repair()
    yield
    repair()


@pytest.fixture
def hostile(
    aws: AwsResources, monkeypatch: pytest.MonkeyPatch, output: CapturedOutput
) -> Iterator[HostileHarness]:
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    monkeypatch.setenv("POP3_TIMEOUT_SECONDS", "2")
    harness = HostileHarness(
        dovecot=cast(Any, None), aws=aws, monkeypatch=monkeypatch, output=output
    )
    yield harness
    for server in harness.servers:
        server.close()


@pytest.fixture
def slow_aws(hostile: HostileHarness) -> Iterator[Any]:
    """S3 and SQS (the handler's own clients) that a test can make slow mid-run.

    See ``never_lose_support.SlowAws``; the hooks are removed, and the core's
    worker threads given time to stop, at teardown.
    """
    from .never_lose_support import MARGIN, SlowAws

    hostile.monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", str(MARGIN))
    slow = SlowAws()
    slow.install()
    yield slow
    slow.uninstall()


@pytest.fixture
def ledger(hostile: HostileHarness) -> Iterator[Any]:
    """What the handler announced (``never_lose_support.Ledger``), from the first run on."""
    from .never_lose_support import Ledger, PointerTap

    tap = PointerTap()
    tap.install()
    yield Ledger(hostile, tap)
    tap.uninstall()


# Messages bigger than this are streamed in the ``small_streams`` tests: the
# streaming path without 8 MiB messages (kept single-part, under S3's 5 MiB
# minimum part size).
SMALL_STREAM_THRESHOLD = 64 * 1024


@pytest.fixture
def small_streams(monkeypatch: pytest.MonkeyPatch) -> int:
    """The handler streams messages above :data:`SMALL_STREAM_THRESHOLD` (no setting exists)."""
    import functools

    from pop3_ingest.domain.options import IngestOptions
    from pop3_ingest.handlers import fetch as app

    monkeypatch.setattr(
        app,
        "IngestOptions",
        functools.partial(IngestOptions, stream_threshold=SMALL_STREAM_THRESHOLD),
    )
    return SMALL_STREAM_THRESHOLD
