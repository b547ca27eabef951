"""What the commands print: one JSON document with ``--json``, lines for a person otherwise.

Results go to stdout, errors to stderr as one line ``pop3-ingest <command>:
<kind> error: <text>``, with secrets masked (:func:`errors.error_line`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from pop3_ingest.config import TlsMode
from pop3_ingest_cli.errors import (
    ERROR_KINDS,
    EXIT_FAILED,
    EXIT_OK,
    error_line,
    exit_code_for,
)

if TYPE_CHECKING:
    from pop3_ingest_cli.check import CheckReport
    from pop3_ingest_cli.replay import ReplaySummary
    from pop3_ingest_cli.stored import Rebuilt

PROG = "pop3-ingest"


def print_json(document: dict[str, Any], out: TextIO | None = None) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2), file=out or sys.stdout)


def print_error(command: str, exc: BaseException, secrets: Iterable[str] = ()) -> int:
    """The error's one line on stderr; returns its exit code."""
    code = exit_code_for(exc)
    print(
        f"{PROG} {command}: {ERROR_KINDS[code]} error: {error_line(exc, secrets)}", file=sys.stderr
    )
    return code


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its JSON fields, its text for a person, and what went wrong.

    ``error`` decides the exit code; without one, ``failed`` (some items failed)
    gives 1, and ``verdict`` a command's own code (``status``: 6, unhealthy).
    """

    command: str
    document: dict[str, Any]
    show: Callable[[], None]
    error: BaseException | None = None
    failed: bool = False
    secrets: frozenset[str] = frozenset()
    verdict: int = EXIT_OK

    @property
    def code(self) -> int:
        if self.error is not None:
            return exit_code_for(self.error)
        return EXIT_FAILED if self.failed else self.verdict


def emit(outcome: Outcome, *, as_json: bool) -> int:
    """Print the outcome one way or the other; returns its exit code."""
    code = outcome.code
    if not as_json:
        outcome.show()
        if outcome.error is not None:
            print_error(outcome.command, outcome.error, outcome.secrets)
        return code
    document = {**outcome.document, "ok": code == EXIT_OK, "exit_code": code}
    if outcome.error is not None:
        document["error_kind"] = ERROR_KINDS[code]
        document["error"] = error_line(outcome.error, outcome.secrets)
    print_json(document)
    return code


def human_size(n: int) -> str:
    """``512 B``, ``3.9 KiB``, ``1.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# -- check ---------------------------------------------------------------------------


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "NO")


def _tls_text(report: CheckReport) -> str:
    if report.tls == TlsMode.NONE.value:
        text = "no TLS (tls 'none'): the password crosses the network in clear text"
        if "STLS" in (report.capabilities or []):
            text += '; the server offers STLS, so set "tls": "starttls"'
        return text
    return f"TLS {report.tls}, certificate verified" if report.login else f"TLS {report.tls}"


def _messages_text(report: CheckReport, count: int, total: int) -> str:
    text = f"{count}, {human_size(total)} ({total} bytes)"
    if count:
        text += f"; largest {human_size(report.largest_bytes or 0)}"
    if report.over_max_message_size:
        text += (
            f"; {report.over_max_message_size} over max_message_size "
            f"({human_size(report.max_message_size)}) will be skipped"
        )
    return text


def _check_lines(report: CheckReport) -> Iterable[tuple[str, str]]:
    yield "server", f"{report.host}:{report.port}, {_tls_text(report)}"
    yield "login", f"ok as {report.username!r}" if report.login else "not completed"
    if report.capabilities is not None:
        yield "capa", ", ".join(report.capabilities) or "(server sent no CAPA)"
        uidl_note = "" if report.uidl or report.uidl is None else " (required by pop3-ingest)"
        yield "uidl", _yes_no(report.uidl) + uidl_note
        yield "pipelining", _yes_no(report.pipelining)
    if report.messages is not None and report.total_bytes is not None:
        yield "messages", _messages_text(report, report.messages, report.total_bytes)
    yield "delete", "yes, once stored and announced" if report.delete else "no (delete: false)"
    if report.quit is not None:
        ended = "ended with QUIT" if report.quit else "QUIT was not acknowledged"
        yield "changed", f"nothing: no RETR, no DELE; {ended}"


def print_check(report: CheckReport, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(f"mailbox {report.mailbox}", file=out)
    for name, value in _check_lines(report):
        print(f"  {name:<11} {value}", file=out)


# -- replay --------------------------------------------------------------------------


def print_replay_item(status: str, item: Rebuilt) -> None:
    """One object's line: what happened to it, its key, size, time and subject."""
    entry = item.entry
    line = f"{status:<10} {entry.key}  {human_size(entry.size)}  {entry.stored_at}"
    if item.error:
        print(f"{line}  error: {item.error}", file=sys.stderr)
        return
    subject = (item.pointer or {}).get("subject") or ""
    note = " (sha256 computed by reading the object)" if item.sha256_computed else ""
    print(f"{line}  {subject[:60]}{note}".rstrip())


def print_replay_summary(summary: ReplaySummary) -> None:
    window = f"[{summary.since or 'beginning'}, {summary.until or 'now'})"
    verb = "would be sent (dry run, nothing sent)" if summary.dry_run else "sent"
    would_send = sum(1 for o in summary.objects if o["status"] == "would send")
    done = would_send if summary.dry_run else summary.sent
    text = (
        f"replay {summary.mailbox}: {summary.in_range} of {summary.listed} stored message(s) "
        f"under s3://{summary.bucket}/{summary.prefix} written in {window}; "
        f"{done} pointer(s) {verb}, {summary.failed} failed"
    )
    if summary.not_sent:
        text += f", {summary.not_sent} not sent (stopped early)"
    if summary.sha256_computed:
        text += f"; sha256 computed by reading {summary.sha256_computed} object(s)"
    print(text)


# -- quarantine ----------------------------------------------------------------------


def print_quarantined(mailbox: str, records: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print_json({"mailbox": mailbox, "quarantined": records})
        return
    if not records:
        print(f"no quarantined messages for {mailbox}")
    for record in records:
        print(
            f"{record['digest']}  uidl={record.get('uidl')!r}  size={record.get('size')}  "
            f"failures={record.get('failures')}  error={record.get('error')}"
        )
        print(f"  key {record.get('key')}")


def print_released(mailbox: str, digests: list[str], *, as_json: bool) -> None:
    if as_json:
        print_json({"mailbox": mailbox, "released": digests})
    else:
        print(f"released {len(digests)} message(s) of {mailbox}; the next run retries them")
        for digest in digests:
            print(f"  {digest}")


# -- mailbox -------------------------------------------------------------------------

_CHANGE_TEXT = {
    "created": "schedule {schedule} created",
    "updated": "schedule {schedule} updated",
    "unchanged": "schedule {schedule} already up to date",
    "deleted": "schedule {schedule} deleted",
    "absent": "no schedule left to delete",
    "failed": "schedule {schedule} NOT written",
}


def print_mailbox_change(document: dict[str, Any]) -> None:
    tagged = "tagged" if document["action"] == "add" else "untagged"
    change = _CHANGE_TEXT[document["change"]].format(schedule=document["schedule"])
    print(f"mailbox {document['secret']}: {tagged}, {change}")
    for problem in document["problems"]:
        print(f"  note: {problem}")


def print_mailboxes(document: dict[str, Any]) -> None:
    mailboxes = document["mailboxes"]
    for mailbox in mailboxes:
        print(f"{mailbox['status']:<10} {mailbox['secret']}  ({mailbox['schedule']})")
    for name in document["orphaned_schedules"]:
        print(f"{'orphaned':<10} schedule {name}: no tagged secret (the reconciler deletes it)")
    waiting = sum(1 for m in mailboxes if m["status"] != "scheduled")
    print(f"{len(mailboxes)} mailbox(es), {waiting} waiting for the reconciler or 'mailbox add'")
