"""moto for the fleet benchmark: a latency per AWS call by kind, and every call counted.

``python -m benchmarks.fleet_aws --page-latency-ms 200 --call-latency-ms 15``
prints one JSON line (``{"endpoint": ...}``) once it serves, and serves until
stdin closes (it dies with the harness) or ``--max-seconds``. It is the
``benchmarks.aws_server`` process (keep-alive, moto's dispatcher and SQS counts
made cheap) with two differences:

- **Latency by kind of call.** A listing page (``List*``, the tagging API's
  ``GetResources``) takes ``--page-latency-ms``; every other call takes
  ``--call-latency-ms``. moto's own time counts towards it: the answer is held
  until the call has lasted that long, so a call costs what the assumption says
  unless moto alone is slower (such calls are counted as ``moto_bound``).
  ``POST /__bench/latency?on=0`` turns the latency off while the harness sets up
  thousands of secrets, ``on=1`` back on.
- **Names for EventBridge Scheduler's REST calls** (``scheduler:CreateSchedule``,
  ...), which ``aws_server.operation_name`` sees only as methods.

moto's ListSecrets turns every matching secret into a dict on every page (all
N of them, for a page of 100), which real Secrets Manager does not;
``make_list_secrets_cheap`` pages first and keeps the matches of one sweep.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import parse_qs

from werkzeug.serving import make_server

from benchmarks.aws_server import (
    REGION,
    REPO_ROOT,
    AwsProcess,
    WsgiApp,
    keep_alive_handler,
    make_moto_cheaper,
    make_sqs_counts_cheap,
    operation_name,
)

# The assumptions (benchmarks/fleet.md): a page of a listing, any other call.
PAGE_LATENCY_MS = 200.0
CALL_LATENCY_MS = 15.0
_MAX_SECONDS_DEFAULT = 3 * 3600
ACCOUNT_ID = "123456789012"  # moto's default account
_PAGED_OPERATIONS = frozenset({"GetResources"})

# EventBridge Scheduler speaks REST: (method, first path segment, has a name) -> operation.
_SCHEDULER_OPERATIONS = {
    ("GET", "schedules", False): "ListSchedules",
    ("GET", "schedules", True): "GetSchedule",
    ("POST", "schedules", True): "CreateSchedule",
    ("PUT", "schedules", True): "UpdateSchedule",
    ("DELETE", "schedules", True): "DeleteSchedule",
    ("GET", "schedule-groups", False): "ListScheduleGroups",
    ("GET", "schedule-groups", True): "GetScheduleGroup",
    ("POST", "schedule-groups", True): "CreateScheduleGroup",
    ("DELETE", "schedule-groups", True): "DeleteScheduleGroup",
    ("GET", "tags", True): "ListTagsForResource",
    ("POST", "tags", True): "TagResource",
    ("DELETE", "tags", True): "UntagResource",
}


def fleet_operation(environ: dict[str, Any]) -> str:
    """``service:Operation`` of one request, Scheduler's REST calls included."""
    name = operation_name(environ)
    service, _, _ = name.partition(":")
    if service != "scheduler":
        return name
    parts = [p for p in environ.get("PATH_INFO", "/").split("/") if p]
    key = (environ.get("REQUEST_METHOD", "?"), parts[0] if parts else "", len(parts) > 1)
    return f"scheduler:{_SCHEDULER_OPERATIONS.get(key, key[0])}"


def is_page(operation: str) -> bool:
    """Whether a call returns a page of a listing (and gets the page latency)."""
    action = operation.partition(":")[2]
    return action.startswith("List") or action in _PAGED_OPERATIONS


def _read_body(environ: dict[str, Any]) -> None:
    """Read the request body in full first: keep-alive needs every body consumed."""
    if environ.get("wsgi.input_terminated"):
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read())
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))


class KindLatency:
    """Holds each AWS call until it has lasted its latency; counts calls by operation."""

    def __init__(self, app: WsgiApp, page_s: float, call_s: float) -> None:
        self._app = app
        self._page_s = page_s
        self._call_s = call_s
        self._on = True
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._moto_bound: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        _read_body(environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__bench/"):
            return self._control(path, environ, start_response)
        if path.startswith("/moto-api"):
            forget_secret_matches()
            return self._app(environ, start_response)
        began = time.monotonic()
        operation = fleet_operation(environ)
        if operation.startswith("secretsmanager:") and not operation.startswith(
            ("secretsmanager:Get", "secretsmanager:List", "secretsmanager:Describe")
        ):
            forget_secret_matches()
        body = list(self._app(environ, start_response))
        latency = (self._page_s if is_page(operation) else self._call_s) if self._on else 0.0
        left = latency - (time.monotonic() - began)
        with self._lock:
            self._counts[operation] += 1
            if latency and left < 0:
                self._moto_bound[operation] += 1
        if left > 0:
            time.sleep(left)  # releases the GIL: concurrent calls wait side by side
        return body

    def _control(
        self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        post = environ.get("REQUEST_METHOD") == "POST"
        if path == "/__bench/reset" and post:
            with self._lock:
                self._counts.clear()
                self._moto_bound.clear()
            document: dict[str, Any] = {}
        elif path == "/__bench/latency" and post:
            query = parse_qs(environ.get("QUERY_STRING", ""))
            self._on = query.get("on", ["1"])[0] != "0"
            document = {"on": self._on}
        elif path == "/__bench/seed-secrets" and post:
            entries = json.loads(environ["wsgi.input"].read() or b"[]")
            document = {"created": seed_secrets(entries)}
        elif path == "/__bench/stats":
            with self._lock:
                document = {"calls": dict(self._counts), "moto_bound": dict(self._moto_bound)}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown"]
        body = json.dumps(document, sort_keys=True).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


def seed_secrets(entries: list[dict[str, Any]]) -> int:
    """Create secrets straight in moto's backend (setting up 100,000 over HTTP takes
    ten minutes); each entry: name, value (a string) and tags."""
    from moto.secretsmanager.models import secretsmanager_backends

    backend = secretsmanager_backends[ACCOUNT_ID][REGION]
    for entry in entries:
        backend.create_secret(
            name=entry["name"],
            secret_string=entry["value"],
            secret_binary=None,
            description=None,
            tags=entry.get("tags") or [],
            kms_key_id=None,
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
    forget_secret_matches()
    return len(entries)


# -- moto's ListSecrets, paged before it is rendered --------------------------------------

_matches_cache: dict[str, list[Any]] = {}
_matches_lock = threading.Lock()


def forget_secret_matches() -> None:
    """A secret changed: the next sweep filters again."""
    with _matches_lock:
        _matches_cache.clear()


def make_list_secrets_cheap() -> None:
    """Same pages as moto's ListSecrets; the matches are rendered once per sweep."""
    from moto.secretsmanager import models

    backend: Any = models.SecretsManagerBackend  # patched on purpose
    everything = backend.list_secrets

    def list_secrets(
        self: Any,
        filters: list[dict[str, Any]],
        max_results: int = models.MAX_RESULTS_DEFAULT,
        next_token: str | None = None,
        include_planned_deletion: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        key = json.dumps([id(self), filters, include_planned_deletion], sort_keys=True)
        with _matches_lock:
            matched = _matches_cache.get(key)
            if matched is None or not next_token:  # a sweep starts on its first page
                matched, _ = everything(
                    self,
                    filters,
                    max_results=2**62,
                    include_planned_deletion=include_planned_deletion,
                )
                _matches_cache[key] = matched
        start = int(next_token or 0)
        end = start + int(max_results or models.MAX_RESULTS_DEFAULT)
        token = str(end) if end < len(matched) else None
        return matched[start:end], token

    backend.list_secrets = list_secrets


def serve(page_latency_ms: float, call_latency_ms: float, *, port: int = 0) -> Any:
    """Start the server in a daemon thread; returns the werkzeug server."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_moto_cheaper()
    make_sqs_counts_cheap()
    make_list_secrets_cheap()
    app = KindLatency(
        DomainDispatcherApplication(create_backend_app),
        page_latency_ms / 1000,
        call_latency_ms / 1000,
    )
    handler = keep_alive_handler(MotoRequestHandler)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=handler)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-latency-ms", type=float, default=PAGE_LATENCY_MS)
    parser.add_argument("--call-latency-ms", type=float, default=CALL_LATENCY_MS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=_MAX_SECONDS_DEFAULT)
    args = parser.parse_args(argv)
    server = serve(args.page_latency_ms, args.call_latency_ms, port=args.port)
    host, port = server.server_address[:2]
    print(json.dumps({"endpoint": f"http://{host}:{port}"}), flush=True)
    watcher = threading.Thread(target=sys.stdin.read, daemon=True)
    watcher.start()
    watcher.join(timeout=args.max_seconds)
    server.shutdown()
    return 0


# -- the harness side ------------------------------------------------------------


class FleetAws(AwsProcess):
    """``benchmarks.fleet_aws`` in its own process, driven over HTTP.

    ``with FleetAws() as aws: aws.latency(False); ...set up...; aws.latency(True)``
    """

    def __init__(
        self, page_latency_ms: float = PAGE_LATENCY_MS, call_latency_ms: float = CALL_LATENCY_MS
    ) -> None:
        super().__init__(latency_ms=call_latency_ms)
        self.page_latency_ms = page_latency_ms
        self.call_latency_ms = call_latency_ms

    def start(self) -> Self:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.fleet_aws",
            "--page-latency-ms",
            str(self.page_latency_ms),
            "--call-latency-ms",
            str(self.call_latency_ms),
        ]
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
            raise RuntimeError("benchmarks.fleet_aws exited before printing its endpoint")
        self.endpoint_url = json.loads(line)["endpoint"]
        (self._aws_dir / "config").write_text("")
        (self._aws_dir / "credentials").write_text("")
        return self

    def latency(self, on: bool) -> None:
        """Turn the injected latency on or off (setup runs without it)."""
        self._post(f"/__bench/latency?on={int(on)}")

    def reset_counts(self) -> None:
        self._post("/__bench/reset")

    def calls(self) -> dict[str, int]:
        """Calls per ``service:Operation`` since the last reset."""
        return {k: int(v) for k, v in self._document()["calls"].items()}

    def moto_bound(self) -> dict[str, int]:
        """Calls moto alone made slower than their assumed latency, since the last reset."""
        return {k: int(v) for k, v in self._document()["moto_bound"].items()}

    def _document(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint_url}/__bench/stats", timeout=60) as resp:
            document: dict[str, Any] = json.loads(resp.read())
        return document

    def seed_secrets(self, entries: list[dict[str, Any]], chunk: int = 2000) -> None:
        """Create secrets (name, value, tags) in moto directly, ``chunk`` per request."""
        import urllib.request

        for start in range(0, len(entries), chunk):
            body = json.dumps(entries[start : start + chunk]).encode()
            request = urllib.request.Request(
                f"{self.endpoint_url}/__bench/seed-secrets", data=body, method="POST"
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()

    def reset_moto(self) -> None:
        """Forget every resource (moto's own reset)."""
        self._post("/moto-api/reset")


if __name__ == "__main__":
    sys.exit(main())
