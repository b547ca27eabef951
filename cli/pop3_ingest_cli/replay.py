"""``pop3-ingest replay``: re-send the SQS pointers of messages already stored in S3."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.message import object_key
from pop3_ingest.domain.ports import SQS_BATCH_SIZE, Announcer
from pop3_ingest.errors import AnnounceError, ConfigError
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import AwsClients, aws_clients, normalize_prefix
from pop3_ingest_cli.stored import Rebuilt, StoredEntry, list_stored, rebuild_pointer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_REBUILD_WORKERS = 8
# How each object ended, as the report names it.
SENT, WOULD_SEND, FAILED = "sent", "would send", "failed"


@dataclass
class ReplaySummary:
    mailbox: str
    bucket: str
    prefix: str
    since: str | None
    until: str | None
    dry_run: bool
    listed: int = 0
    in_range: int = 0
    sent: int = 0
    failed: int = 0
    not_sent: int = 0  # left unsent because the run stopped early
    sha256_computed: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)


Report = Callable[[str, Rebuilt], None]


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (try 2026-11-26 or 2026-11-26T09:30:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be earlier than --until")


def mailbox_prefix(prefix: str, mailbox: str) -> str:
    """``<prefix><mailbox>/``, checked with the same rule as the function's keys."""
    try:
        object_key(prefix, mailbox, "")
    except ValueError:
        raise ConfigError(
            f"--mailbox {mailbox[:60]!r} is not a mailbox name "
            "(1-128 letters, digits and . _ @ + -)"
        ) from None
    return f"{prefix}{mailbox}/"


def send_pointers(announcer: Announcer, pointers: list[dict[str, Any]]) -> set[int]:
    """Send up to ten pointers; entries SQS refused are tried once more.

    Returns the indexes that still failed. AnnounceError (the call as a whole
    failed, after the SDK's retries) is raised.
    """
    failed = announcer.announce_batch(pointers)
    if not failed:
        return set()
    retry = sorted(failed)
    again = announcer.announce_batch([pointers[i] for i in retry])
    return {retry[i] for i in again}


def _batches(items: Sequence[StoredEntry]) -> Iterator[Sequence[StoredEntry]]:
    for start in range(0, len(items), SQS_BATCH_SIZE):
        yield items[start : start + SQS_BATCH_SIZE]


def _announce(
    announcer: Announcer, summary: ReplaySummary, ready: list[Rebuilt], report: Report
) -> None:
    try:
        refused = send_pointers(announcer, [r.pointer for r in ready if r.pointer])
    except AnnounceError:
        # SQS as a whole refused (after the SDK's retries): stop here.
        summary.not_sent = summary.in_range - summary.sent - summary.failed
        raise
    for index, item in enumerate(ready):
        summary.sha256_computed += item.sha256_computed
        if index in refused:
            item.error = "SQS refused the message"
            summary.failed += 1
            report(FAILED, item)
        else:
            summary.sent += 1
            report(SENT, item)


def run_replay(
    s3: S3Client,
    announcer: Announcer | None,
    summary: ReplaySummary,
    entries: Sequence[StoredEntry],
    report: Report,
) -> None:
    """Rebuild and (unless ``announcer`` is None: dry run) send, a batch at a time."""
    rebuild = functools.partial(
        rebuild_pointer, s3, summary.bucket, summary.mailbox, compute_sha256=announcer is not None
    )
    with ThreadPoolExecutor(max_workers=_REBUILD_WORKERS) as pool:
        for batch in _batches(entries):
            rebuilt = list(pool.map(rebuild, batch))
            for item in rebuilt:
                if item.error is not None:
                    summary.failed += 1
                    report(FAILED, item)
            ready = [r for r in rebuilt if r.pointer is not None]
            if announcer is None:
                for item in ready:
                    report(WOULD_SEND, item)
            elif ready:
                _announce(announcer, summary, ready, report)


def _recorder(summary: ReplaySummary, *, show_lines: bool) -> Report:
    """Adds each object's row to the summary and, for a person, prints its line."""

    def record(status: str, item: Rebuilt) -> None:
        entry = item.entry
        row: dict[str, Any] = {
            "status": status,
            "key": entry.key,
            "size": entry.size,
            "stored_at": entry.stored_at,
        }
        if item.sha256_computed:
            row["sha256_computed"] = True
        if item.error:
            row["error"] = item.error
        if summary.dry_run and item.pointer is not None:
            row["pointer"] = item.pointer
        summary.objects.append(row)
        if show_lines:
            render.print_replay_item(status, item)

    return record


def _replay(args: argparse.Namespace, summary: ReplaySummary, clients: AwsClients) -> None:
    from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer

    summary.listed, entries = list_stored(
        clients.s3, args.bucket, summary.prefix, args.since, args.until
    )
    summary.in_range = len(entries)
    announcer = None if args.dry_run else SqsAnnouncer(clients.sqs, args.queue_url)
    report = _recorder(summary, show_lines=not args.json)
    run_replay(clients.s3, announcer, summary, entries, report)


def cmd_replay(args: argparse.Namespace, clients: Callable[[], AwsClients] = aws_clients) -> int:
    since: datetime | None = args.since
    until: datetime | None = args.until
    summary = ReplaySummary(
        mailbox=args.mailbox,
        bucket=args.bucket,
        prefix=args.key_prefix,
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        dry_run=args.dry_run,
    )
    error: Exception | None = None
    try:
        check_window(since, until)  # before any AWS client exists
        summary.prefix = mailbox_prefix(normalize_prefix(args.key_prefix), args.mailbox)
        _replay(args, summary, clients())
    except (ConfigError, ClientError, BotoCoreError, AnnounceError) as exc:
        error = exc
    outcome = render.Outcome(
        command="replay",
        document=dataclasses.asdict(summary),
        show=functools.partial(render.print_replay_summary, summary),
        error=error,
        failed=summary.failed > 0,
    )
    return render.emit(outcome, as_json=args.json)
