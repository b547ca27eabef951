"""A moto server on 127.0.0.1 that boto3 and Powertools reach via ``AWS_ENDPOINT_URL``.

A real HTTP endpoint (rather than ``mock_aws``) exercises the code exactly as it
runs in Lambda: clients come from the SDK's standard configuration only.

moto's SQS takes any body. Real SQS refuses a message body holding a character
outside ``#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF``
(``InvalidMessageContents``) and a message, or a batch as a whole, over
256 KiB. With ``strict_sqs`` (the default) a small WSGI layer in front of moto
answers SendMessage and SendMessageBatch as real SQS does: a bad single message
is a 400 error, a bad entry of a batch is listed in ``Failed`` while the rest is
sent, and a batch too large is refused as a whole. What it refused is in
:attr:`MotoServer.sqs_rejections`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import werkzeug.serving
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from tests.support.background import HOST, SocketServerThread

REGION = "us-east-1"

# Environment variables that could send SDK calls somewhere other than moto
# (a developer's profile, per-service endpoint overrides, real session tokens).
_LEAKY_ENV_PREFIXES = ("AWS_ENDPOINT_URL_",)
_LEAKY_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


def leaky_env_names(environ: MutableMapping[str, str]) -> list[str]:
    """Names in ``environ`` that must be removed for SDK calls to reach only moto."""
    return [n for n in environ if n in _LEAKY_ENV or n.startswith(_LEAKY_ENV_PREFIXES)]


# -- SQS's rules, which moto does not enforce -------------------------------------------

SQS_MAX_PAYLOAD_BYTES = 256 * 1024
# Written out here on purpose, not imported from the package: the test oracle.
_SQS_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SEND = "AmazonSQS.SendMessage"
_SEND_BATCH = "AmazonSQS.SendMessageBatch"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def sqs_body_problem(body: str) -> str | None:
    """Real SQS's complaint about a message body's characters, if it has one."""
    bad = _SQS_FORBIDDEN.search(body)
    if bad is None:
        return None
    return (
        f"Invalid binary character '#x{ord(bad.group()):X}' was found in the message body, "
        "the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | "
        "#xE000 to #xFFFD | #x10000 to #x10FFFF"
    )


def _payload_size(entry: dict[str, Any]) -> int:
    size = len(str(entry.get("MessageBody", "")).encode("utf-8", "surrogatepass"))
    for name, attribute in (entry.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        size += len(str(attribute.get("StringValue", "")).encode("utf-8", "surrogatepass"))
    return size


class StrictSqs:
    """WSGI layer in front of moto: SendMessage(Batch) checked as real SQS checks them.

    boto3 speaks SQS's JSON protocol (``X-Amz-Target: AmazonSQS.<Action>``);
    every other request passes through untouched.
    """

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.rejections: list[str] = []  # one line per refused message or batch

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target not in (_SEND, _SEND_BATCH):
            return self._app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        request = json.loads(raw)
        if target == _SEND:
            return self._send(environ, start_response, request, raw)
        return self._send_batch(environ, start_response, request)

    def _send(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        request: dict[str, Any],
        raw: bytes,
    ) -> Iterable[bytes]:
        problem = sqs_body_problem(str(request.get("MessageBody", "")))
        if problem is not None:
            return self._error(start_response, "InvalidMessageContents", problem)
        if _payload_size(request) > SQS_MAX_PAYLOAD_BYTES:
            return self._error(
                start_response,
                "InvalidParameterValue",
                f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{SQS_MAX_PAYLOAD_BYTES} bytes.",
            )
        return self._forward(environ, start_response, raw)

    def _send_batch(
        self, environ: dict[str, Any], start_response: Callable[..., Any], request: dict[str, Any]
    ) -> Iterable[bytes]:
        entries = list(request.get("Entries") or [])
        total = sum(_payload_size(entry) for entry in entries)
        if total > SQS_MAX_PAYLOAD_BYTES:
            return self._error(
                start_response,
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {SQS_MAX_PAYLOAD_BYTES} bytes. "
                f"You have sent {total} bytes.",
            )
        failed: list[dict[str, Any]] = []
        good: list[dict[str, Any]] = []
        for entry in entries:
            problem = sqs_body_problem(str(entry.get("MessageBody", "")))
            if problem is None:
                good.append(entry)
                continue
            self._reject(f"InvalidMessageContents: {problem}")
            failed.append(
                {
                    "Id": entry.get("Id"),
                    "SenderFault": True,
                    "Code": "InvalidMessageContents",
                    "Message": problem,
                }
            )
        if not failed:
            return self._forward(environ, start_response, json.dumps(request).encode())
        if not good:
            return self._json(start_response, "200 OK", {"Successful": [], "Failed": failed})
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *args: Any) -> None:
            captured["status"], captured["headers"] = status, headers

        forwarded = json.dumps({**request, "Entries": good}).encode()
        body = b"".join(self._app(self._environ(environ, forwarded), capture))
        if not str(captured.get("status", "")).startswith("200"):
            start_response(captured["status"], captured["headers"])
            return [body]
        response = json.loads(body)
        response["Failed"] = list(response.get("Failed") or []) + failed
        return self._json(start_response, "200 OK", response)

    def _forward(
        self, environ: dict[str, Any], start_response: Callable[..., Any], raw: bytes
    ) -> Iterable[bytes]:
        return self._app(self._environ(environ, raw), start_response)

    @staticmethod
    def _environ(environ: dict[str, Any], raw: bytes) -> dict[str, Any]:
        return {**environ, "wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw))}

    def _reject(self, line: str) -> None:
        with self._lock:
            self.rejections.append(line)

    def _error(self, start_response: Callable[..., Any], code: str, message: str) -> list[bytes]:
        self._reject(f"{code}: {message}")
        body = {"__type": f"com.amazonaws.sqs#{code}", "message": message}
        return self._json(
            start_response, "400 Bad Request", body, [("x-amzn-query-error", f"{code};Sender")]
        )

    @staticmethod
    def _json(
        start_response: Callable[..., Any],
        status: str,
        document: dict[str, Any],
        headers: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        body = json.dumps(document).encode()
        start_response(
            status,
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(body))),
                *(headers or []),
            ],
        )
        return [body]


@dataclass
class AwsResources:
    """Clients and the bucket/queue of one test, all pointing at the moto server."""

    moto: MotoServer
    s3: Any
    sqs: Any
    secretsmanager: Any
    bucket: str
    queue_url: str

    def put_secret(self, name: str, value: dict[str, Any] | str) -> str:
        """Store a mailbox secret as JSON; returns ``name`` (usable as SECRET_ID)."""
        self.moto.create_secret(name, value)
        return name

    def function_env(self, secret_id: str) -> dict[str, str]:
        """The function's own environment (docs/configuration.md) for this test.

        The test servers listen on 127.0.0.1: private hosts are allowed explicitly.
        """
        return {
            "SECRET_ID": secret_id,
            "BUCKET_NAME": self.bucket,
            "QUEUE_URL": self.queue_url,
            "ALLOW_PRIVATE_HOSTS": "true",
        }

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    def get_object(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        return {key: self.get_object(key) for key in self.keys(prefix)}

    def receive_all(self, *, delete: bool = True) -> list[dict[str, Any]]:
        """Drain the queue; returns the JSON-decoded message bodies in receive order."""
        bodies: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=300,  # never see the same message twice while draining
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                if delete:
                    self.sqs.delete_message(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )


class MotoServer(SocketServerThread):
    """``with MotoServer() as moto: moto.apply_env(); ...``

    moto's own app (as ``ThreadedMotoServer`` builds it), behind :class:`StrictSqs`
    unless ``strict_sqs=False``.
    """

    thread_name = "moto-server"

    def __init__(self, host: str = HOST, port: int = 0, *, strict_sqs: bool = True) -> None:
        super().__init__()
        self._host = host
        self._port = port
        app: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self._strict = StrictSqs(app) if strict_sqs else None
        self._app: WsgiApp = app if self._strict is None else self._strict
        self._clients: dict[str, Any] = {}
        # Empty config/credentials files isolate the tests from ~/.aws.
        self._aws_dir = Path(tempfile.gettempdir()) / f"pop3-ingest-aws-{uuid.uuid4().hex[:12]}"

    # -- lifecycle -----------------------------------------------------------

    def make_server(self) -> werkzeug.serving.BaseWSGIServer:
        # werkzeug logs every request at INFO; that drowns test and demo output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._aws_dir.mkdir(mode=0o700, exist_ok=True)
        (self._aws_dir / "config").write_text("")
        (self._aws_dir / "credentials").write_text("")
        return werkzeug.serving.make_server(
            self._host, self._port, self._app, threaded=True, request_handler=MotoRequestHandler
        )

    def close(self) -> None:
        super().close()
        self._clients.clear()
        shutil.rmtree(self._aws_dir, ignore_errors=True)

    @property
    def sqs_rejections(self) -> list[str]:
        """What the strict SQS layer refused so far (empty when not strict)."""
        return [] if self._strict is None else list(self._strict.rejections)

    @property
    def endpoint_url(self) -> str:
        return self.url

    def reset(self) -> None:
        """Forget every resource in every service (moto's own reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    # -- environment ---------------------------------------------------------

    def aws_env(self) -> dict[str, str]:
        """Variables that point every SDK client at this server with dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": str(self._aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self._aws_dir / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def apply_env(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Set ``aws_env()`` in ``environ`` (default ``os.environ``), dropping leaky vars."""
        env = os.environ if environ is None else environ
        for name in leaky_env_names(env):
            del env[name]
        env.update(self.aws_env())

    @contextmanager
    def env(self) -> Iterator[None]:
        """Apply ``aws_env()`` to ``os.environ`` for the block, then restore it."""
        saved = dict(os.environ)
        self.apply_env()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    # -- clients and resources ----------------------------------------------

    def client(self, service: str) -> Any:
        """A cached client for this server (creating one costs ~0.1 s)."""
        if service not in self._clients:
            # Explicit settings: works whether or not the environment was applied.
            self._clients[service] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    def create_bucket(self, name: str) -> str:
        self.client("s3").create_bucket(Bucket=name)
        return name

    def create_queue(self, name: str, **attributes: str) -> str:
        """Create a queue; returns its URL."""
        response = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)
        return str(response["QueueUrl"])

    def create_secret(self, name: str, value: dict[str, Any] | str) -> str:
        """Create (or overwrite) a secret holding JSON; returns its ARN."""
        secret_string = value if isinstance(value, str) else json.dumps(value)
        sm = self.client("secretsmanager")
        try:
            response = sm.create_secret(Name=name, SecretString=secret_string)
        except sm.exceptions.ResourceExistsException:
            response = sm.put_secret_value(SecretId=name, SecretString=secret_string)
        return str(response["ARN"])

    def provision(self, bucket: str = "mail-bucket", queue: str = "mail-queue") -> AwsResources:
        """Create a bucket and a queue and return clients for them."""
        self.create_bucket(bucket)
        queue_url = self.create_queue(queue)
        return AwsResources(
            moto=self,
            s3=self.client("s3"),
            sqs=self.client("sqs"),
            secretsmanager=self.client("secretsmanager"),
            bucket=bucket,
            queue_url=queue_url,
        )
