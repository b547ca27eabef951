"""moto over HTTP with an added latency per AWS call, as its own process.

``python -m benchmarks.aws_server --latency-ms 15`` prints one JSON line
(``{"endpoint": "http://127.0.0.1:PORT"}``) once it accepts requests and
serves until stdin closes (so it dies with the harness) or ``--max-seconds``.

Why a process of its own: moto is CPU-heavy Python; in the harness process it
would share a GIL with the latency proxy and skew both.

What it adds to moto:

- Keep-alive: werkzeug closes every connection; real S3 and SQS do not
  (``keep_alive_handler``).
- ``LatencyMiddleware`` sleeps ``latency`` before every AWS request. The server
  is threaded (one thread per connection, HTTP/1.1 keep-alive), so concurrent
  calls wait side by side, as they would against real S3 and SQS.
- Per-operation request counts (``GET /__bench/stats``, ``POST /__bench/reset``)
  for the cost model: what a contender really sent, not what we think it sent.
- ``make_moto_cheaper``: moto's dispatcher lists its own package directory
  (``os.listdir`` + ``isdir`` on ~180 entries) several times per request, about
  a third of a small PUT's cost on these cores; the list never changes, so it
  is cached.
- ``make_sqs_counts_cheap``: moto recomputes a queue's approximate message counts
  by scanning every message on each SendMessage (``queue.attributes`` is built
  in full to read one flag), so sends slow down as the queue fills. Real SQS
  does not. The benchmark makes those counts O(1); the harness also resets moto
  (emptying the queue) before every contender.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_MAX_SECONDS_DEFAULT = 3 * 3600


def operation_name(environ: dict[str, Any]) -> str:
    """``service:Operation`` of one request, from what is visible without reading its body."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = _CREDENTIAL_SCOPE.search(auth)
    service = match.group(1) if match else "unknown"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:  # JSON protocol (SQS, Secrets Manager): "AmazonSQS.SendMessageBatch"
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    if service != "s3":
        return f"{service}:{environ.get('REQUEST_METHOD', '?')}"
    method = environ.get("REQUEST_METHOD", "?")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    path = environ.get("PATH_INFO", "/").strip("/")
    has_key = "/" in path  # path-style addressing: /bucket/key
    if method == "PUT":
        if "partNumber" in query:
            return "s3:UploadPart"
        return "s3:PutObject" if has_key else "s3:CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "s3:CreateMultipartUpload"
        if "uploadId" in query:
            return "s3:CompleteMultipartUpload"
        return "s3:POST"
    if method == "DELETE":
        return "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
    if method == "HEAD":
        return "s3:HeadObject" if has_key else "s3:HeadBucket"
    if method == "GET":
        return "s3:GetObject" if has_key else "s3:ListObjects"
    return f"s3:{method}"


def _buffer_body(environ: dict[str, Any]) -> None:
    """Read a request body completely before the app sees it.

    Keep-alive (below) needs every body consumed, or its leftover bytes would be
    read as the next request; an app that ignores a body cannot break that now.
    """
    if environ.get("wsgi.input_terminated"):  # chunked: werkzeug de-chunks to EOF
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read())
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))


class LatencyMiddleware:
    """Sleeps before each AWS call and counts it; serves the /__bench endpoints itself."""

    def __init__(self, app: WsgiApp, latency_s: float) -> None:
        self._app = app
        self._latency_s = latency_s
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        _buffer_body(environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__bench/"):
            return self._bench(path, environ, start_response)
        if not path.startswith("/moto-api"):
            with self._lock:
                self._counts[operation_name(environ)] += 1
            if self._latency_s > 0:
                time.sleep(self._latency_s)  # releases the GIL: concurrent calls overlap
        return self._app(environ, start_response)

    def _bench(
        self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        if path == "/__bench/reset" and environ.get("REQUEST_METHOD") == "POST":
            with self._lock:
                self._counts.clear()
            body = b"{}"
        elif path == "/__bench/stats":
            with self._lock:
                body = json.dumps(dict(self._counts), sort_keys=True).encode()
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown"]
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


def keep_alive_handler(base: type[Any]) -> type[Any]:
    """``base`` (moto's request handler) serving HTTP/1.1 keep-alive.

    werkzeug 3 closes every connection (and drains the socket after each
    response, which would swallow a kept-alive client's next request). Real
    S3 and SQS keep connections open; without that every call here would pay a
    new TCP connection and a new server thread, in the client and in moto
    alike. This ``run_wsgi`` keeps werkzeug's environ (and moto's header
    handling) but writes each response with an exact Content-Length and leaves
    the connection open unless the client asked to close it. Request bodies
    are always read in full first (``_buffer_body``), so nothing is left over.
    """

    class KeepAliveHandler(base):  # type: ignore[misc]
        def run_wsgi(self) -> None:
            environ = self.make_environ()
            started: list[Any] = []
            chunks: list[bytes] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
                started[:] = [status, headers]
                return chunks.append

            try:
                result = self.server.app(environ, start_response)
                try:
                    chunks.extend(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            except Exception as exc:  # report it like a server would, then hang up
                started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
                chunks[:] = [f"benchmark server error: {exc!r}".encode()]
                self.close_connection = True
            status, headers = started
            code, _, reason = status.partition(" ")
            body = b"".join(chunks)
            self.send_response(int(code), reason)
            head_only = environ["REQUEST_METHOD"] == "HEAD"
            for name, value in headers:
                lower = name.lower()
                if lower == "connection" or (lower == "content-length" and not head_only):
                    continue
                self.send_header(name, value)
            bodyless = head_only or int(code) in (204, 304) or int(code) < 200
            if not bodyless:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and not bodyless:
                self.wfile.write(body)

    return KeepAliveHandler


def make_moto_cheaper() -> None:
    """Cache moto's list of its own modules (see module doc); behaviour is unchanged."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    module: Any = backends  # patched on purpose
    module.list_of_moto_modules = lambda: modules


def make_sqs_counts_cheap() -> None:
    """Replace moto's O(n) approximate queue counts with O(1) ones (see module doc)."""
    from moto.sqs import models

    queue: Any = models.Queue  # patched on purpose

    def _visible(self: Any) -> int:
        return len(self._messages)

    def _zero(self: Any) -> int:
        return 0

    queue.approximate_number_of_messages = property(_visible)
    queue.approximate_number_of_messages_not_visible = property(_zero)
    queue.approximate_number_of_messages_delayed = property(_zero)


def serve(
    latency_ms: float, *, cheap_sqs_counts: bool = True, keep_alive: bool = True, port: int = 0
) -> Any:
    """Start the server in a daemon thread; returns the werkzeug server (``.shutdown()``)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_moto_cheaper()
    if cheap_sqs_counts:
        make_sqs_counts_cheap()
    app = LatencyMiddleware(DomainDispatcherApplication(create_backend_app), latency_ms / 1000)
    handler = keep_alive_handler(MotoRequestHandler) if keep_alive else MotoRequestHandler
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=handler)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--moto-sqs-counts",
        action="store_true",
        help="keep moto's O(n) SQS approximate counts (default: made O(1))",
    )
    parser.add_argument(
        "--no-keep-alive", action="store_true", help="werkzeug's one connection per request"
    )
    parser.add_argument("--max-seconds", type=float, default=_MAX_SECONDS_DEFAULT)
    args = parser.parse_args(argv)
    server = serve(
        args.latency_ms,
        cheap_sqs_counts=not args.moto_sqs_counts,
        keep_alive=not args.no_keep_alive,
        port=args.port,
    )
    host, port = server.server_address[:2]
    print(json.dumps({"endpoint": f"http://{host}:{port}"}), flush=True)
    # Bounded: stop when the parent closes our stdin (it exited) or after max-seconds.
    watcher = threading.Thread(target=sys.stdin.read, daemon=True)
    watcher.start()
    watcher.join(timeout=args.max_seconds)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- the harness side ------------------------------------------------------------


class AwsProcess:
    """Starts ``python -m benchmarks.aws_server`` and drives it over HTTP.

    ``with AwsProcess(latency_ms=15) as aws: aws.fresh(bucket, queue); ...``
    """

    def __init__(self, latency_ms: float, *, cheap_sqs_counts: bool = True) -> None:
        self.latency_ms = latency_ms
        self.cheap_sqs_counts = cheap_sqs_counts
        self._proc: subprocess.Popen[str] | None = None
        self.endpoint_url = ""
        self._clients: dict[str, Any] = {}
        self._aws_dir = Path(tempfile.mkdtemp(prefix="pop3-ingest-bench-aws-"))

    def start(self) -> Self:
        cmd = [sys.executable, "-m", "benchmarks.aws_server", "--latency-ms", str(self.latency_ms)]
        if not self.cheap_sqs_counts:
            cmd.append("--moto-sqs-counts")
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # bounded: the child prints or dies
        if not line:
            self.stop()
            raise RuntimeError("benchmarks.aws_server exited before printing its endpoint")
        self.endpoint_url = json.loads(line)["endpoint"]
        (self._aws_dir / "config").write_text("")
        (self._aws_dir / "credentials").write_text("")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # the server's signal to stop
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self._aws_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """SDK settings that send every call to this server with dummy credentials."""
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

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def fresh(self, bucket: str, queue: str, secrets: dict[str, str] | None = None) -> str:
        """Forget all state, create bucket, queue and secrets, zero the counters.

        Returns the queue URL. Resetting also empties the queue, so no
        contender pays for the previous one's messages.
        """
        self._post("/moto-api/reset")
        self.client("s3").create_bucket(Bucket=bucket)
        queue_url = str(self.client("sqs").create_queue(QueueName=queue)["QueueUrl"])
        for name, value in (secrets or {}).items():
            self.client("secretsmanager").create_secret(Name=name, SecretString=value)
        self._post("/__bench/reset")
        return queue_url

    def stats(self) -> dict[str, int]:
        """Requests per ``service:Operation`` since the last ``fresh()``."""
        with urllib.request.urlopen(f"{self.endpoint_url}/__bench/stats", timeout=60) as resp:
            return {str(k): int(v) for k, v in json.loads(resp.read()).items()}

    def object_count(self, bucket: str, suffix: str = ".eml") -> tuple[int, int]:
        """(objects, bytes) in ``bucket`` whose keys end with ``suffix``.

        Messages are ``<prefix><mailbox>/<digest>.eml``; the handler's own
        bookkeeping objects (run state, quarantine records) are not messages.
        """
        count = size = 0
        paginator = self.client("s3").get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                if str(obj["Key"]).endswith(suffix):
                    count += 1
                    size += int(obj["Size"])
        return count, size

    def queue_depth(self, queue_url: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
