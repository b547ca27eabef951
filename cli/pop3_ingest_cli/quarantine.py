"""``pop3-ingest quarantine``: list, release or drop messages quarantined after repeated failures.

``release`` lets every quarantined message of a mailbox (or the one
``--digest`` names) be tried again; ``drop`` does it for exactly one message,
named the way ``list`` shows it (``--uidl``, ``--digest`` or ``--key``). Both
delete the message's record and clear it from the run state with the state
store's conditional, merged write. The message stays on the POP3 server all
along: the next run fetches it again if it is still there.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import ConfigError, Pop3IngestError
from pop3_ingest.integrations.s3_state import S3StateStore
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory, mailbox_name, normalize_prefix
from pop3_ingest_cli.errors import EXIT_FAILED, EXIT_OK
from pop3_ingest_cli.stack import deployment
from pop3_ingest_cli.states import StateReader

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# drop's ways to name a message, and the record field each matches.
_DROP_BY = {"uidl": "uidl", "digest": "digest", "key": "key"}


def read_records(s3: S3Client, bucket: str, record_prefix: str) -> list[dict[str, Any]]:
    """Every quarantine record under the prefix, each with its message's ``digest`` and ``key``."""
    records: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=record_prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            digest = item["Key"].rsplit("/", 1)[-1].removesuffix(".json")
            records.append({"digest": digest, "key": item["Key"], **json.loads(body)})
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


def check_arguments(args: argparse.Namespace) -> None:
    """Each action's own options, before any AWS client exists."""
    mailbox_name(args.mailbox)
    if args.key_prefix is not None:
        normalize_prefix(args.key_prefix)
    named = [option for option in _DROP_BY if getattr(args, option) is not None]
    if args.action == "drop" and len(named) != 1:
        raise ConfigError("'quarantine drop' needs exactly one of --uidl, --digest or --key")
    if args.action != "drop" and set(named) - {"digest"}:
        raise ConfigError("--uidl and --key go with 'quarantine drop' only")
    if args.action == "list" and named:
        raise ConfigError("'quarantine list' lists them all: --digest goes with release or drop")


def chosen(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[str]:
    """The digests the action applies to; an error line and [] when a named one is not there."""
    if args.action == "release" and args.digest is None:
        return [r["digest"] for r in records]
    option = next(option for option in _DROP_BY if getattr(args, option) is not None)
    wanted = getattr(args, option)
    found = [r["digest"] for r in records if r.get(_DROP_BY[option]) == wanted]
    if not found:
        print(
            f"{render.PROG} quarantine: no quarantined message of {args.mailbox} "
            f"with {option} {wanted!r}",
            file=sys.stderr,
        )
    return found


def _known(reader: StateReader, mailbox: str) -> None:
    """A mailbox with no record and no state is not a mailbox: say so (exit 2)."""
    if reader.read(mailbox).etag is None:
        raise ConfigError(
            f"no mailbox {mailbox!r}: no run state at {reader.location(mailbox)} and no "
            "quarantine records (the name is the secret's 'mailbox' field)"
        )


def _act(args: argparse.Namespace, session: Aws) -> int:
    where = deployment(args, session)
    reader = StateReader(session.s3, where.need("bucket"), where.prefix)
    store = reader.store
    records = read_records(session.s3, reader.bucket, store.quarantine_prefix(args.mailbox))
    if not records:
        _known(reader, args.mailbox)
    if args.action == "list":
        render.print_quarantined(args.mailbox, records, as_json=args.json)
        return EXIT_OK
    digests = chosen(args, records)
    if not digests and (args.action == "drop" or args.digest):
        return EXIT_FAILED
    if digests:
        release(session.s3, store, reader.bucket, args.mailbox, digests)
    render.print_released(args.mailbox, digests, as_json=args.json)
    return EXIT_OK


def cmd_quarantine(args: argparse.Namespace, aws: AwsFactory = Aws.from_args) -> int:
    try:
        check_arguments(args)
        return _act(args, aws(args))
    except (ClientError, BotoCoreError, Pop3IngestError, ValueError) as exc:
        return render.print_error("quarantine", exc)
