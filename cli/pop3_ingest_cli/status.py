"""``pop3-ingest status``: each mailbox's health from its run state, with exit codes for monitors.

All mailboxes are those with a state document under ``<prefix>_state/``, and
in Mode fleet every tagged secret too (one that never ran has no state yet).
Nothing is written: states are read with plain GETs (:mod:`.states`), and
what makes a mailbox unhealthy is decided in :mod:`.health`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import ConfigError, Pop3IngestError
from pop3_ingest_cli import health, render
from pop3_ingest_cli.aws import Aws, AwsFactory, mailbox_name
from pop3_ingest_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY, error_line
from pop3_ingest_cli.progress import Progress
from pop3_ingest_cli.stack import Deployment, deployment
from pop3_ingest_cli.states import Directory, StateReader, StoredState, tagged_mailboxes

_READERS = 8  # state GETs in flight at once


@dataclass
class StatusReport:
    bucket: str
    prefix: str
    mode: str
    stale_after_hours: float
    checked_at: str | None
    mailboxes: list[health.MailboxHealth] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = {health.OK: 0, health.UNHEALTHY: 0, health.UNREADABLE: 0, health.NOT_POLLED: 0}
        for row in self.mailboxes:
            counted[row.health] += 1
        return counted

    @property
    def code(self) -> int:
        """Unhealthy first (known trouble), then unreadable (unknown), else 0."""
        counted = self.counts()
        if counted[health.UNHEALTHY]:
            return EXIT_UNHEALTHY
        return EXIT_FAILED if counted[health.UNREADABLE] else EXIT_OK

    def document(self) -> dict[str, Any]:
        counted = self.counts()
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "mode": self.mode,
            "stale_after_hours": self.stale_after_hours,
            "checked_at": self.checked_at,
            "mailboxes": [row.document() for row in self.mailboxes],
            "healthy": counted[health.OK],
            "unhealthy": counted[health.UNHEALTHY],
            "unreadable": counted[health.UNREADABLE],
            "not_polled": counted[health.NOT_POLLED],
        }


def _stale_after_hours(args: argparse.Namespace, where: Deployment) -> float:
    if args.stale_after is not None:
        return float(args.stale_after)
    try:
        return float(where.stale_after_hours or health.DEFAULT_STALE_AFTER_HOURS)
    except ValueError:
        return health.DEFAULT_STALE_AFTER_HOURS


def _read_all(
    reader: StateReader, names: list[str], progress: Progress
) -> list[StoredState | Exception]:
    def read(name: str) -> StoredState | Exception:
        try:
            return reader.read(name)
        except (ClientError, BotoCoreError) as exc:
            return exc

    results: list[StoredState | Exception] = []
    with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="state") as pool:
        for result in pool.map(read, names):
            results.append(result)
            progress.step("reading run states", len(results), len(names))
    progress.done()
    return results


def assess(
    name: str, result: StoredState | Exception, rules: health.Rules, directory: Directory | None
) -> health.MailboxHealth:
    """One mailbox's row: from its state, and in Mode fleet its tagged secret."""
    tagged = None if directory is None else directory.mailboxes.get(name)
    if isinstance(result, Exception):
        row = health.unreadable(name, error_line(result))
    elif result.damaged is not None:
        row = health.damaged(name, result.damaged)
    elif result.state is None:
        row = health.never_ran(name, tagged.secret if tagged else "")
    else:
        fingerprint = tagged.fingerprint if tagged else None
        row = health.judge(name, result.state, rules, fingerprint=fingerprint)
    if tagged is not None:
        row.secret = tagged.secret
    elif directory is not None and row.health != health.UNREADABLE:
        row = health.untagged(row)
    return row


def _names(
    args: argparse.Namespace, reader: StateReader, directory: Directory | None, progress: Progress
) -> list[str]:
    if args.mailbox:
        return [mailbox_name(args.mailbox)]
    progress.note("listing run states")
    names = set(reader.mailboxes())
    if directory is not None:
        names |= set(directory.mailboxes)
    return sorted(names)


def survey(
    args: argparse.Namespace, where: Deployment, aws: Aws, progress: Progress
) -> StatusReport:
    reader = StateReader(aws.s3, where.need("bucket"), where.prefix)
    directory = tagged_mailboxes(aws.secretsmanager, progress) if where.fleet else None
    names = _names(args, reader, directory, progress)
    now = time.time()
    hours = _stale_after_hours(args, where)
    rules = health.Rules(now, health.stale_limit(hours, fleet=where.fleet))
    report = StatusReport(
        reader.bucket, reader.prefix, where.mode or "single", hours, health.iso(now)
    )
    for name, result in zip(names, _read_all(reader, names, progress), strict=True):
        known = directory is not None and name in directory.mailboxes
        if args.mailbox and isinstance(result, StoredState) and result.etag is None and not known:
            raise ConfigError(
                f"no mailbox {name!r}: no run state at {reader.location(name)}"
                + ("" if directory is None else " and no tagged secret names it")
                + " (the name is the secret's 'mailbox' field)"
            )
        report.mailboxes.append(assess(name, result, rules, directory))
    if directory is not None and not args.mailbox:
        for secret, reason in sorted(directory.unusable.items()):
            report.mailboxes.append(health.unusable_secret(secret, reason))
    if not report.mailboxes:
        raise ConfigError(
            f"no mailbox has a run state under s3://{reader.bucket}/{reader.folder} "
            "(check --bucket and --key-prefix, or --stack-name; or no run has saved one yet)"
        )
    return report


# -- what it prints ---------------------------------------------------------------------


def _last_completed(row: health.MailboxHealth, now: float) -> str:
    if not row.completed_at:
        return "no completed run"
    when = health.iso(row.completed_at)
    return f"last completed {when} ({health.ago(now - row.completed_at)} ago)"


def print_rows(report: StatusReport, now: float) -> None:
    for row in report.mailboxes:
        label = row.health.upper() if row.health != health.OK else row.health
        print(f"{label:<11} {row.mailbox}  {_last_completed(row, now)}")
        for text in row.problems:
            print(f"{'':<11}   - {text}")
        if row.problems and row.facts.get("last_error"):
            print(f"{'':<11}   last error {row.facts['last_error_at']}: {row.facts['last_error']}")
    counted = report.counts()
    parts = [f"{counted[health.OK]} ok", f"{counted[health.UNHEALTHY]} unhealthy"]
    parts += [
        f"{counted[key]} {key}" for key in (health.UNREADABLE, health.NOT_POLLED) if counted[key]
    ]
    print(f"{len(report.mailboxes)} mailbox(es): {', '.join(parts)}")


def print_one(row: health.MailboxHealth, now: float) -> None:
    facts = row.facts
    print(f"mailbox {row.mailbox}: {row.health.upper() if row.health != health.OK else row.health}")
    lines = [
        ("secret", row.secret),
        ("completed", _last_completed(row, now).removeprefix("last completed ")),
        ("attempted", facts.get("last_attempt")),
        (
            "last error",
            facts.get("last_error") and f"{facts['last_error_at']}: {facts['last_error']}",
        ),
        ("quarantined", facts.get("quarantined")),
        ("pending", facts.get("pending")),
    ]
    for name, value in lines:
        if value is not None and value != "":
            print(f"  {name:<12} {value}")
    for text in row.problems:
        print(f"  problem      {text}")
    for text in row.notes:
        print(f"  note         {text}")


def cmd_status(args: argparse.Namespace, aws: AwsFactory = Aws.from_args) -> int:
    progress = Progress("status", as_json=args.json)
    try:
        session = aws(args)
        report = survey(args, deployment(args, session), session, progress)
    except (ClientError, BotoCoreError, Pop3IngestError) as exc:
        progress.done()
        return render.emit(render.Outcome("status", {}, lambda: None, error=exc), as_json=args.json)
    now = time.time()
    show: Callable[[], None]
    if args.mailbox:
        show = lambda: print_one(report.mailboxes[0], now)  # noqa: E731
    else:
        show = lambda: print_rows(report, now)  # noqa: E731
    outcome = render.Outcome("status", report.document(), show, verdict=report.code)
    return render.emit(outcome, as_json=args.json)
