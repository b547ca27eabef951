"""`make demo`: one real ingest run on this machine, no AWS account needed.

Starts a private Dovecot (implicit TLS, throwaway CA) holding a few sample
messages and a moto server standing in for S3, SQS and Secrets Manager, invokes
``pop3_ingest.handlers.fetch.lambda_handler`` once with a scheduled event, prints what
landed where, and stops everything again.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared helpers live in tests/support; the package in functions/ (also
# importable without `pip install -e .`).
for _path in (REPO_ROOT / "functions", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.support.corpus import (  # noqa: E402
    CorpusMessage,
    attachment_message,
    by_name,
    long_line_message,
    simple,
)
from tests.support.dovecot import DovecotServer, dovecot_binary  # noqa: E402
from tests.support.lambda_context import FakeContext  # noqa: E402
from tests.support.moto_server import MotoServer  # noqa: E402

EVENT_FILE = REPO_ROOT / "events" / "scheduled-event.json"
FALLBACK_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "00000000-0000-4000-8000-000000000000",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2025-01-15T09:05:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/pop3-ingest-demo"],
    "detail": {},
}
USER = "demo@example.test"
SECRET_NAME = "pop3-ingest/demo"
BUCKET = "pop3-ingest-demo-mail"
QUEUE = "pop3-ingest-demo-queue"


class Printer:
    """print() that can never show the mailbox password, whatever the handler returns."""

    def __init__(self, password: str) -> None:
        self._password = password

    def __call__(self, text: str = "") -> None:
        print(text.replace(self._password, "********"), flush=True)

    def json(self, value: Any) -> None:
        self(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def sample_messages() -> list[CorpusMessage]:
    return [
        simple(1),
        long_line_message(),  # one 10,000-byte line: stock poplib gives up at 2048
        attachment_message(),  # ~3 MB base64 attachment
        by_name("encoded-subject"),
        by_name("utf8-8bit"),
    ]


def load_event(out: Printer) -> dict[str, Any]:
    if not EVENT_FILE.exists():
        out(f"(no {EVENT_FILE.relative_to(REPO_ROOT)}; using a built-in scheduled event)")
        return dict(FALLBACK_EVENT)
    event: dict[str, Any] = json.loads(EVENT_FILE.read_text())
    # An override would point at a secret that does not exist here.
    event.pop("secret_id", None)
    return event


def main() -> int:
    if dovecot_binary() is None:
        print(
            "dovecot is not installed: run `make deps` (apt-get install dovecot-core dovecot-pop3d)"
        )
        return 2
    password = secrets.token_urlsafe(18)
    out = Printer(password)

    with ExitStack() as stack:  # unwinds in reverse: moto, then Dovecot
        out("== starting Dovecot (POP3S on 127.0.0.1, throwaway CA)")
        dovecot = stack.enter_context(DovecotServer())
        dovecot.add_user(USER, password)
        messages = sample_messages()
        for message in messages:
            dovecot.deliver(USER, message.expected)
        out(f"   port {dovecot.pop3s_port}, {len(messages)} messages for {USER}:")
        for message in messages:
            out(f"   - {message.name:<16} {message.size:>9} bytes  {message.subject}")

        out("== starting moto (S3, SQS, Secrets Manager)")
        moto = stack.enter_context(MotoServer())
        moto.apply_env()
        aws = moto.provision(bucket=BUCKET, queue=QUEUE)
        secret = dovecot.secret(USER, tls="implicit", mailbox="demo")
        moto.create_secret(SECRET_NAME, secret)
        os.environ.update(
            {
                "SECRET_ID": SECRET_NAME,
                "BUCKET_NAME": aws.bucket,
                "QUEUE_URL": aws.queue_url,
                # The demo's POP3 server listens on 127.0.0.1.
                "ALLOW_PRIVATE_HOSTS": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_SERVICE_NAME": "pop3-ingest",
                "POWERTOOLS_METRICS_NAMESPACE": "Pop3IngestDemo",
            }
        )
        out(f"   endpoint {moto.endpoint_url}, bucket {aws.bucket}, secret {SECRET_NAME}")
        out(
            f"   secret: host={secret['host']} port={secret['port']} tls={secret['tls']} "
            f"username={secret['username']} mailbox={secret['mailbox']} (+ ca_cert, password)"
        )

        try:
            # Imported only now: the module reads its environment at import time.
            from pop3_ingest.handlers.fetch import lambda_handler
        except ImportError as exc:
            out(f"!! cannot import pop3_ingest.handlers.fetch ({exc}); is the package installed?")
            return 2

        event = load_event(out)
        out("== invoking pop3_ingest.handlers.fetch.lambda_handler")
        try:
            summary = lambda_handler(event, FakeContext(remaining_ms=60_000))
        except Exception:
            out("!! the handler raised:")
            out(traceback.format_exc())
            out("--- Dovecot log tail ---")
            out(dovecot.log_text(tail=20))
            return 1

        out("== summary returned by the handler")
        out.json(summary)

        out("== objects in S3")
        keys = aws.keys()
        for key in keys:
            size = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ContentLength"]
            out(f"   {size:>9}  s3://{aws.bucket}/{key}")
        if not keys:
            out("   (none)")

        out("== pointers on SQS")
        pointers = aws.receive_all()
        for body in pointers:
            out.json(body)
        if not pointers:
            out("   (none)")

        remaining = dovecot.message_count(USER)
        out(f"== {remaining} of {len(messages)} messages left on the POP3 server")
        out("== stopping moto and Dovecot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
