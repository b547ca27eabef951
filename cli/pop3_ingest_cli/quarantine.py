"""``pop3-ingest quarantine``: list or release messages quarantined after repeated failures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import Pop3IngestError
from pop3_ingest.integrations.s3_state import S3StateStore
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import AwsClients, aws_clients, normalize_prefix
from pop3_ingest_cli.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def read_records(s3: S3Client, bucket: str, record_prefix: str) -> list[dict[str, Any]]:
    """Every quarantine record under the prefix, each with its message's ``digest``."""
    records: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=record_prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            digest = item["Key"].rsplit("/", 1)[-1].removesuffix(".json")
            records.append({"digest": digest, **json.loads(body)})
    return records


def release(
    s3: S3Client, store: S3StateStore, bucket: str, mailbox: str, digests: list[str]
) -> None:
    """Forget the messages' failures in the run state and remove their records."""
    current = store.read(mailbox)
    state = current.state.copy()
    for digest in digests:
        state.release(digest)
        s3.delete_object(Bucket=bucket, Key=store.quarantine_key(mailbox, digest))
    # Conditional and merged: a run saving meanwhile keeps its work, and
    # this release survives the run's own final save.
    store.write(mailbox, state, current)


def _list_or_release(args: argparse.Namespace, prefix: str, clients: AwsClients) -> int:
    store = S3StateStore(clients.s3, args.bucket, prefix)
    records = read_records(clients.s3, args.bucket, store.quarantine_prefix(args.mailbox))
    if args.action == "list":
        render.print_quarantined(args.mailbox, records, as_json=args.json)
        return EXIT_OK
    chosen = [r["digest"] for r in records if args.digest in (None, r["digest"])]
    if args.digest and not chosen:
        print(f"{render.PROG} quarantine: no quarantined message {args.digest}", file=sys.stderr)
        return EXIT_FAILED
    release(clients.s3, store, args.bucket, args.mailbox, chosen)
    render.print_released(args.mailbox, chosen, as_json=args.json)
    return EXIT_OK


def cmd_quarantine(
    args: argparse.Namespace, clients: Callable[[], AwsClients] = aws_clients
) -> int:
    try:
        prefix = normalize_prefix(args.key_prefix)  # before any AWS client exists
        return _list_or_release(args, prefix, clients())
    except (ClientError, BotoCoreError, Pop3IngestError, ValueError) as exc:
        return render.print_error("quarantine", exc)
