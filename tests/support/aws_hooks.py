"""Hooks on the handler's own S3 and SQS clients: faults, slowness, what was announced.

``aws_clients()`` of the handler is cached, so a hook registered on its clients
sees every call the handler makes. The hooks sit at botocore's send step, below
its retry handler: the SDK's real retries run before the handler sees a failure.

- :class:`AwsFaults`: chosen calls answer with an HTTP error.
- :class:`SlowAws`: chosen calls are held, as a slow region would hold them,
  until the handler returns; from then on every call is refused. That models
  Lambda freezing the process at return: work left running never reaches AWS.
- :class:`PointerTap` and :class:`Ledger`: what SQS accepted, and whether each
  message is announced (a pointer names an S3 object holding its exact bytes).

Nothing measures time: holds are bounded (:data:`HOLD_SECONDS`) so a run that
waits for them still ends, and the tests check what the run did. The handler
is imported when a hook is installed, after the ``moto`` fixture has set the
Powertools environment.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from tests.support.fake_pop3 import FakeMessage, FakePop3Server
from tests.support.moto_server import AwsResources

# The longest a held call waits for the handler to return. Longer than any
# deadline these tests give, so a run that waits for held calls overruns it.
HOLD_SECONDS = 6.0
# DEADLINE_MARGIN_SECONDS in the tests that make AWS slow (the ``slow_aws`` fixture).
MARGIN = 2.0
# Threads the core runs uploads and announces on (ThreadPoolExecutor prefixes).
_WORKER_PREFIXES = ("upload", "announce")


def handler_clients() -> Any:
    """The handler's own (cached) AWS clients."""
    from pop3_ingest.handlers.fetch import aws_clients

    return aws_clients()


class _RawBody:
    """What botocore reads a response body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def error_response(url: str, service: str, status: int, code: str, message: str) -> AWSResponse:
    """An error answer as S3 (XML) or SQS (JSON protocol) gives it."""
    headers = HTTPHeaders()
    if service == "s3":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        headers["Content-Type"] = "application/xml"
    else:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers["Content-Type"] = "application/x-amz-json-1.0"
        headers["x-amzn-query-error"] = code
    return AWSResponse(url, status, headers, _RawBody(body))


class AwsFaults:
    """Make the handler's own S3/SQS client answer chosen calls with an HTTP error."""

    def __init__(self) -> None:
        self._registered: list[tuple[Any, str, Callable[..., AWSResponse | None]]] = []

    def install(
        self,
        service: str,
        operation: str,
        status: int = 500,
        code: str = "InternalError",
        when: Callable[[Any], bool] = lambda request: True,
    ) -> None:
        """Calls of ``service.operation`` for which ``when(request)`` fail with ``status``."""
        client = getattr(handler_clients(), service)

        def handler(request: Any, **_: Any) -> AWSResponse | None:
            if not when(request):
                return None
            return error_response(request.url, service, status, code, "injected")

        event = f"before-send.{service}.{operation}"
        client.meta.events.register(event, handler)
        self._registered.append((client, event, handler))

    def remove_all(self) -> None:
        for client, event, handler in self._registered:
            client.meta.events.unregister(event, handler)
        self._registered.clear()


@dataclass(frozen=True)
class Call:
    """One request the handler sends: the n-th of its operation, and its body size."""

    n: int
    size: int


@dataclass
class _Rule:
    service: str
    operation: str
    applies: Callable[[Call], bool]
    action: Callable[[Call], None]
    refuse: bool = False


@dataclass
class SlowAws:
    """Slow S3 and SQS for the handler's clients; frozen after the handler returns."""

    frozen: threading.Event = field(default_factory=threading.Event, repr=False)
    calls: Counter[str] = field(default_factory=Counter)  # "s3.PutObject" -> count
    held_bytes: int = 0  # request bytes of PutObject calls being held right now
    peak_held_bytes: int = 0
    _rules: list[_Rule] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _installed: list[tuple[Any, str]] = field(default_factory=list, repr=False)

    # -- set-up ------------------------------------------------------------------

    def install(self) -> None:
        clients = handler_clients()
        for client, service in ((clients.s3, "s3"), (clients.sqs, "sqs")):
            event = f"before-send.{service}"
            # botocore uses a handler's response at before-send (the stub says None).
            client.meta.events.register(event, cast("Callable[..., None]", self._before_send))
            self._installed.append((client, event))

    def uninstall(self) -> None:
        self.freeze()
        for client, event in self._installed:
            client.meta.events.unregister(event, self._before_send)
        self._installed.clear()

    def when(
        self,
        service: str,
        operation: str,
        applies: Callable[[Call], bool],
        action: Callable[[Call], None],
    ) -> None:
        """Run ``action(call)`` at the start of each such call for which ``applies(call)``."""
        self._rules.append(_Rule(service, operation, applies, action))

    def refuse(self, service: str, operation: str, applies: Callable[[Call], bool]) -> None:
        """Such calls are refused (403, not retried) when ``applies(call)``."""
        self._rules.append(_Rule(service, operation, applies, lambda call: None, refuse=True))

    def hold_from(
        self, service: str, operation: str, nth: int, *, first: Callable[[], None] | None = None
    ) -> None:
        """From the ``nth`` call on, each call is held until the handler returns.

        ``first`` runs when the ``nth`` call starts (to bring the deadline close, say).
        """

        def act(call: Call) -> None:
            if call.n == nth and first is not None:
                first()
            self.hold()

        self.when(service, operation, lambda call: call.n >= nth, act)

    def started(self, service: str, operation: str, nth: int) -> threading.Event:
        """An event set when the ``nth`` call starts."""
        event = threading.Event()
        self.when(service, operation, lambda call: call.n == nth, lambda call: event.set())
        return event

    def hold(self, until: threading.Event | None = None) -> None:
        """Hold the calling request until ``until`` is set or the handler returns (bounded)."""
        deadline = time.monotonic() + HOLD_SECONDS
        while not self.frozen.is_set() and time.monotonic() < deadline:
            if until is not None and until.is_set():
                return
            self.frozen.wait(0.02)

    # -- the handler's life cycle ---------------------------------------------------

    def freeze(self) -> None:
        """The handler returned: held calls are released and refused, and so is
        every later call, until :meth:`thaw`. Waits (bounded) for the core's
        worker threads to finish what they were doing."""
        self.frozen.set()
        limit = time.monotonic() + 5.0
        for thread in threading.enumerate():
            if thread.name.startswith(_WORKER_PREFIXES):
                thread.join(max(0.0, limit - time.monotonic()))

    def thaw(self) -> None:
        """A new invocation: AWS answers normally again, with no rules."""
        self.freeze()
        self._rules.clear()
        self.calls.clear()
        self.held_bytes = self.peak_held_bytes = 0
        self.frozen.clear()

    # -- the hook --------------------------------------------------------------------

    def _before_send(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        if self.frozen.is_set():
            return _refusal(request.url, service)
        size = int(request.headers.get("Content-Length") or 0)
        held = size if operation == "PutObject" else 0
        with self._lock:
            name = f"{service}.{operation}"
            self.calls[name] += 1
            call = Call(self.calls[name], size)
            rules = [r for r in self._rules if (r.service, r.operation) == (service, operation)]
            self.held_bytes += held
            self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
        refused = False
        try:
            for rule in rules:
                if rule.applies(call):
                    rule.action(call)
                    refused = refused or rule.refuse
        finally:
            with self._lock:
                self.held_bytes -= held
        if refused or self.frozen.is_set():
            return _refusal(request.url, service)
        return None


def _refusal(url: str, service: str) -> AWSResponse:
    # 403: not retried by the SDK, so a frozen process makes no progress at all.
    return error_response(url, service, 403, "AccessDenied", "process frozen")


def content_id(body: bytes) -> str:
    """What S3 gives as the ETag of a single-part object holding ``body``."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


class PointerTap:
    """The pointers SQS accepted from the handler's own client, as the handler sent them.

    Read at the SDK (the entries of each SendMessageBatch that SQS answered as
    successful) rather than from the queue: moto takes about a second per
    hundred pointers to hand them back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivered: list[dict[str, Any]] = []
        self._client: Any = None

    def install(self) -> None:
        self._client = handler_clients().sqs
        events = self._client.meta.events
        events.register("before-parameter-build.sqs.SendMessageBatch", self._remember)
        events.register("after-call.sqs.SendMessageBatch", self._accepted)

    def uninstall(self) -> None:
        if self._client is not None:
            events = self._client.meta.events
            events.unregister("before-parameter-build.sqs.SendMessageBatch", self._remember)
            events.unregister("after-call.sqs.SendMessageBatch", self._accepted)
            self._client = None

    def take(self) -> list[dict[str, Any]]:
        """The pointers accepted since the last call."""
        with self._lock:
            taken, self._delivered = self._delivered, []
        return taken

    def _remember(self, params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        context["never_lose_entries"] = list(params.get("Entries", []))

    def _accepted(self, parsed: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        entries = {str(e["Id"]): e for e in context.get("never_lose_entries", [])}
        accepted = [entries[str(ok["Id"])] for ok in parsed.get("Successful", [])]
        with self._lock:
            self._delivered += [json.loads(e["MessageBody"]) for e in accepted]


@dataclass
class Ledger:
    """Every pointer SQS accepted, and the content of the object each one names.

    A message is announced when a pointer names an S3 object holding its exact
    bytes. Contents are compared through S3's ETag (the MD5 of a single-part
    object's bytes; a multipart object is read): cheap for hundreds of messages.
    """

    aws: AwsResources
    tap: PointerTap
    pointers: list[dict[str, Any]] = field(default_factory=list)
    _contents: Counter[str] = field(default_factory=Counter)

    def announced(self) -> Counter[str]:
        """How many pointers name an object with each content (:func:`content_id`)."""
        new = self.tap.take()
        if new:
            etags = _etags(self.aws)
            for pointer in new:
                self.pointers.append(pointer)
                key = str(pointer.get("key"))
                etag = etags.get(key)
                if etag is None:
                    continue  # names no object
                if "-" in etag:  # multipart: its ETag is not the MD5 of its bytes
                    etag = content_id(self.aws.get_object(key))
                self._contents[etag] += 1
        return Counter(self._contents)

    def missing(self, mail: list[FakeMessage]) -> list[str]:
        """Messages whose exact bytes no pointer names (UIDLs)."""
        announced = self.announced()
        return [repr(m.uidl) for m in mail if not announced[content_id(m.body)]]

    def lost(self, mail: list[FakeMessage], *servers: FakePop3Server) -> list[str]:
        """Messages neither announced nor still offered by the server (UIDLs)."""
        offered = {id(m) for server in servers for m in server.messages}
        return self.missing([m for m in mail if id(m) not in offered])


def _etags(aws: AwsResources) -> dict[str, str]:
    paginator = aws.s3.get_paginator("list_objects_v2")
    return {
        obj["Key"]: obj["ETag"].strip('"')
        for page in paginator.paginate(Bucket=aws.bucket)
        for obj in page.get("Contents", [])
    }
