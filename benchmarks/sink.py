"""Child process: the line's limit (b), the S3 + SQS sink alone, no POP3.

Takes the same messages (bytes read from the corpus templates, CRLF as POP3
serves them, prepared before the clock starts) and does what the handler does
with each: an S3 write under a fresh key with ``If-None-Match: *``, content
type, metadata and SHA-256 checksum (one PutObject below 8 MiB, a managed
multipart upload above), then a JSON pointer to SQS, with ``--concurrency``
worker threads sharing one client per service and pointers sent in batches of
``--sqs-batch`` (10 = SendMessageBatch, 1 = SendMessage each). Every call goes
through the same moto endpoint and the same added latency as the handler's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

MIB = 1024 * 1024
# Below this the handler sends one PutObject, above it a managed multipart upload
# (pop3_ingest.integrations.s3_store); mirrored here, not imported, so the sink keeps
# working while the core changes.
STREAM_THRESHOLD = 8 * MIB


def _transfer_config() -> TransferConfig:
    config = TransferConfig(multipart_threshold=STREAM_THRESHOLD, multipart_chunksize=8 * MIB)
    config.max_concurrency = 4
    return config


def _require_absent(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("IfNoneMatch", "*")


class Sink:
    def __init__(self, bucket: str, queue_url: str, concurrency: int, sqs_batch: int) -> None:
        config = Config(
            retries={"mode": "standard", "max_attempts": 4},
            max_pool_connections=max(concurrency * 2, 10),
        )
        session = boto3.session.Session()
        self.s3: Any = session.client("s3", config=config)
        self.sqs: Any = session.client("sqs", config=config)
        for event in ("PutObject", "CompleteMultipartUpload"):
            self.s3.meta.events.register(f"before-parameter-build.s3.{event}", _require_absent)
        self.bucket = bucket
        self.queue_url = queue_url
        self.sqs_batch = max(1, min(sqs_batch, 10))
        self.concurrency = concurrency
        self.transfer = _transfer_config()
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self.sends = 0

    def store(self, number: int, body: bytes) -> None:
        key = f"mail/bench/{hashlib.sha256(str(number).encode()).hexdigest()}.eml"
        sha256 = hashlib.sha256(body)  # the handler hashes every byte too
        digest = sha256.hexdigest()
        metadata = {"mailbox": "bench", "uidl-sha256": key[-44:-4], "sha256": digest}
        if len(body) < STREAM_THRESHOLD:
            # As the handler: one PUT carrying our checksum, If-None-Match via the hook.
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="message/rfc822",
                Metadata=metadata,
                ChecksumSHA256=base64.b64encode(sha256.digest()).decode("ascii"),
            )
        else:
            self.s3.upload_fileobj(
                io.BytesIO(body),
                self.bucket,
                key,
                ExtraArgs={"ContentType": "message/rfc822", "Metadata": metadata},
                Config=self.transfer,
            )
        pointer = {
            "bucket": self.bucket,
            "key": key,
            "size": len(body),
            "sha256": digest,
            "mailbox": "bench",
            "uidl": f"{number:016X}",
            "message_id": f"<bench-{number:08d}@example.org>",
            "subject": f"Ticket {number}",
            "from": "Sender <sender@example.org>",
            "date": "Wed, 01 May 2024 08:00:00 +0000",
            "stored_at": "2024-05-01T08:00:00+00:00",
        }
        with self._lock:
            self._pending.append(pointer)
            batch = self._take(self.sqs_batch) if len(self._pending) >= self.sqs_batch else []
        if batch:
            self._send(batch)

    def _take(self, n: int) -> list[dict[str, Any]]:
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    def flush(self) -> None:
        while True:
            with self._lock:
                batch = self._take(self.sqs_batch)
            if not batch:
                return
            self._send(batch)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        attributes = {"mailbox": {"DataType": "String", "StringValue": "bench"}}
        if len(batch) == 1 and self.sqs_batch == 1:
            self.sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(batch[0], separators=(",", ":")),
                MessageAttributes=attributes,
            )
        else:
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(p, separators=(",", ":")),
                    "MessageAttributes": attributes,
                }
                for i, p in enumerate(batch)
            ]
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"SQS batch entries failed: {response['Failed'][:3]}")
        with self._lock:
            self.sends += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-dir", type=Path, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sqs-batch", type=int, default=10)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    # The wire form (CRLF) of every message, ready before the clock starts.
    bodies = [
        path.read_bytes().replace(b"\n", b"\r\n") for path in sorted(args.corpus_dir.glob("*.eml"))
    ]
    sink = Sink(args.bucket, args.queue_url, args.concurrency, args.sqs_batch)
    # Warm the connection and credentials untimed, then zero the endpoint's request
    # counters so the cost figures show only the sink's own calls.
    sink.s3.head_bucket(Bucket=args.bucket)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://127.0.0.1:"):
        request = urllib.request.Request(f"{endpoint}/__bench/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for future in [pool.submit(sink.store, n, body) for n, body in enumerate(bodies)]:
            future.result()
    sink.flush()
    work_s = time.monotonic() - started
    result = {
        "messages": len(bodies),
        "bytes": sum(len(b) for b in bodies),
        "work_s": work_s,
        "sqs_sends": sink.sends,
        "concurrency": args.concurrency,
        "sqs_batch": sink.sqs_batch,
        "pid": os.getpid(),
    }
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
