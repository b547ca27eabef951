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

from pop3_ingest.domain.ports import SQS_BATCH_SIZE, Announcer
from pop3_ingest.errors import AnnounceError, ConfigError
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory, mailbox_name, normalize_prefix
from pop3_ingest_cli.progress import Progress
from pop3_ingest_cli.stack import deployment
from pop3_ingest_cli.states import StateReader
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
    return f"{prefix}{mailbox_name(mailbox)}/"


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


def _recorder(summary: ReplaySummary, *, show_lines: bool, progress: Progress) -> Report:
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
            progress.clear()  # the line goes where the progress was
            render.print_replay_item(status, item)
        progress.step("objects", len(summary.objects), summary.in_range)

    return record


def _known(reader: StateReader, mailbox: str, prefix: str) -> None:
    """Nothing stored and no run state: the mailbox does not exist here (exit 2)."""
    if reader.read(mailbox).etag is None:
        raise ConfigError(
            f"no mailbox {mailbox!r}: nothing stored under s3://{reader.bucket}/{prefix} "
            f"and no run state at {reader.location(mailbox)}"
        )


def _replay(
    args: argparse.Namespace, summary: ReplaySummary, session: Aws, progress: Progress
) -> None:
    from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer

    where = deployment(args, session)
    summary.bucket = where.need("bucket")
    summary.prefix = mailbox_prefix(where.prefix, args.mailbox)
    queue_url = None if args.dry_run else where.need("queue_url")
    summary.listed, entries = list_stored(
        session.s3,
        summary.bucket,
        summary.prefix,
        args.since,
        args.until,
        on_page=lambda n: progress.note(f"listing stored messages ({n} so far)"),
    )
    if not summary.listed:
        _known(StateReader(session.s3, summary.bucket, where.prefix), args.mailbox, summary.prefix)
    summary.in_range = len(entries)
    announcer = None if queue_url is None else SqsAnnouncer(session.sqs, queue_url)
    report = _recorder(summary, show_lines=not args.json, progress=progress)
    try:
        run_replay(session.s3, announcer, summary, entries, report)
    finally:
        progress.done()


def cmd_replay(args: argparse.Namespace, aws: AwsFactory = Aws.from_args) -> int:
    since: datetime | None = args.since
    until: datetime | None = args.until
    summary = ReplaySummary(
        mailbox=args.mailbox,
        bucket=args.bucket or "",
        prefix=args.key_prefix or "",
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        dry_run=args.dry_run,
    )
    progress = Progress("replay", as_json=args.json)
    error: Exception | None = None
    try:
        check_window(since, until)  # before any AWS client exists
        mailbox_name(args.mailbox)
        if args.key_prefix is not None:
            normalize_prefix(args.key_prefix)
        _replay(args, summary, aws(args), progress)
    except (ConfigError, ClientError, BotoCoreError, AnnounceError) as exc:
        progress.done()
        error = exc
    outcome = render.Outcome(
        command="replay",
        document=dataclasses.asdict(summary),
        show=functools.partial(render.print_replay_summary, summary),
        error=error,
        failed=summary.failed > 0,
    )
    return render.emit(outcome, as_json=args.json)
