"""Running the real handler against the real Dovecot and moto."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import poplib
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.dovecot import DovecotServer
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources
from tests.support.popa3d import Popa3dMailbox, missing_requirements, popa3d_mailbox

EVENT = {
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


@dataclass
class Harness:
    """One mailbox wired to the handler: deliver mail, run, look at the results."""

    dovecot: DovecotServer
    aws: AwsResources
    monkeypatch: pytest.MonkeyPatch
    user: str = "alice"

    def configure(self, secret: dict[str, Any] | str, **env: str) -> str:
        name = self.aws.put_secret(f"mailbox-{self.user}", secret)
        for key, value in {**self.aws.function_env(name), **env}.items():
            self.monkeypatch.setenv(key, value)
        return name

    def run(self, remaining_ms: int = 120_000, event: dict[str, Any] | None = None) -> Any:
        from pop3_ingest.handlers.fetch import lambda_handler

        context = FakeLambdaContext(remaining_ms=remaining_ms)
        return lambda_handler(dict(event or EVENT), context)

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

    def mail_keys(self) -> list[str]:
        """Stored messages only (not the run state or quarantine records)."""
        return [key for key in self.aws.keys() if "/_" not in key]

    def mail_objects(self) -> dict[str, bytes]:
        return {k: v for k, v in self.aws.objects().items() if "/_" not in k}

    def key_for(self, uidl: str, mailbox: str) -> str:
        from pop3_ingest.domain.message import object_key

        return object_key("mail/", mailbox, uidl)


@pytest.fixture
def harness(dovecot: DovecotServer, aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    return Harness(dovecot=dovecot, aws=aws, monkeypatch=monkeypatch)


@pytest.fixture
def popa3d() -> Iterator[Popa3dMailbox]:
    """A popa3d mailbox on 127.0.0.1: a fresh system user with an empty mbox.

    Skipped locally, failed in CI, where popa3d cannot run (not installed, not root).
    """
    missing = missing_requirements()
    if missing is not None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{missing}; CI must run `make deps` as root", pytrace=False)
        pytest.skip(missing)
    with popa3d_mailbox() as mailbox:
        yield mailbox


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _FakeRaw:
    body: bytes

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.fixture
def aws_fault() -> Iterator[Callable[..., None]]:
    """Make the handler's own S3/SQS client answer with an HTTP error.

    The error is produced at the send step, below botocore's retry handler,
    so the SDK's real retries run before the handler sees the failure.
    """
    from botocore.awsrequest import AWSResponse

    from pop3_ingest.handlers.fetch import aws_clients

    registered: list[tuple[Any, str, Any]] = []

    def install(
        service: str,
        operation: str,
        status: int = 500,
        code: str = "InternalError",
        when: Callable[[Any], bool] = lambda request: True,
    ) -> None:
        client = getattr(aws_clients(), service)
        if service == "s3":
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            headers = {"Content-Type": "application/xml"}
        else:
            body = f'{{"__type":"{code}","message":"injected"}}'.encode()
            headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": code}

        def handler(request: Any, **_: Any) -> AWSResponse | None:
            if not when(request):
                return None
            return AWSResponse(request.url, status, headers, _FakeRaw(body))

        event = f"before-send.{service}.{operation}"
        client.meta.events.register(event, handler)
        registered.append((client, event, handler))

    yield install
    for client, event, handler in registered:
        client.meta.events.unregister(event, handler)


@dataclass
class CapturedOutput:
    """Everything a run wrote: JSON log lines and EMF metric blobs."""

    logs: io.StringIO
    capsys: pytest.CaptureFixture[str]
    _printed: str = ""

    def text(self) -> str:
        out = self.capsys.readouterr()
        self._printed += out.out + out.err
        return self.logs.getvalue() + self._printed

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Iterator[CapturedOutput]:
    """Capture the Powertools log handler (shared by the core's loggers) and stdout."""
    from pop3_ingest.handlers.fetch import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    if getattr(handler.stream, "closed", False):
        # Powertools kept the stdout of the test that first imported the app;
        # when that was a capsys stream it is closed by now.
        handler.stream = sys.stdout
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield CapturedOutput(logs=stream, capsys=capsys)
    finally:
        if previous is not None:
            handler.setStream(previous)
