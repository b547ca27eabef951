"""The operator's command line: ``pop3-ingest check`` and ``pop3-ingest replay``.

``check`` is the "test settings" button: it logs in with a mailbox secret,
shows what the server offers and how much mail waits, and changes nothing.
``replay`` re-sends SQS pointers for messages already stored in S3, for
example after a consumer bug dropped some.

Exit codes (both commands): 0 ok, 1 failed (protocol error, lost connection,
an AWS call failed, pointers not sent), 2 usage, configuration or secret error,
3 TLS or connection error, 4 login rejected, 5 mailbox busy (try later).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.domain.message import StoredMessage, object_key, parse_header_fields
from pop3_ingest.errors import (
    AnnounceError,
    AuthError,
    ConfigError,
    ConnectError,
    MailboxBusy,
    Pop3IngestError,
    SecretError,
    TlsError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from pop3_ingest.domain.message import ServerMessage

PROG = "pop3-ingest"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_CONNECT = 3
EXIT_AUTH = 4
EXIT_BUSY = 5

_KIND = {
    EXIT_FAILED: "failed",
    EXIT_CONFIG: "config",
    EXIT_CONNECT: "connect",
    EXIT_AUTH: "auth",
    EXIT_BUSY: "busy",
}

# AWS error codes that mean "the bucket or queue named on the command line is wrong".
_MISSING_RESOURCE_CODES = frozenset(
    {
        "NoSuchBucket",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidAddress",
    }
)
# Secret fields whose values must never be printed, whatever the secret's shape.
_SENSITIVE_FIELDS = frozenset(
    {"password", "client_secret", "refresh_token", "access_token", "token"}
)
_HEADER_BYTES = 64 * 1024  # what the function itself parses for the pointer's header fields
_HASH_CHUNK = 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_REPLAY_BATCH = 10  # SQS's limit per SendMessageBatch
_REPLAY_WORKERS = 8
_MAX_ERROR_CHARS = 500


# -- errors and exit codes --------------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, ConfigError | SecretError):
        return EXIT_CONFIG
    if isinstance(exc, NoRegionError | NoCredentialsError | PartialCredentialsError):
        return EXIT_CONFIG
    if isinstance(exc, AnnounceError) and isinstance(exc.__cause__, ClientError):
        return exit_code_for(exc.__cause__)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return EXIT_CONFIG if code in _MISSING_RESOURCE_CODES else EXIT_FAILED
    if isinstance(exc, TlsError | ConnectError):
        return EXIT_CONNECT
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, MailboxBusy):
        return EXIT_BUSY
    return EXIT_FAILED


def error_line(exc: BaseException, redact: Iterable[str] = ()) -> str:
    """One printable line for an error: no line breaks, bounded, secrets masked."""
    text = str(exc) or type(exc).__name__
    for secret in sorted({s for s in redact if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if isinstance(exc, NoRegionError):
        text += " (set AWS_REGION or a region in your AWS profile)"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def sensitive_values(data: object) -> set[str]:
    """Every string under a sensitive field name, in a secret dict or a config dataclass."""
    found: set[str] = set()
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    if isinstance(data, dict):
        for name, value in data.items():
            if isinstance(value, str) and str(name).lower() in _SENSITIVE_FIELDS:
                found.add(value)
            else:
                found |= sensitive_values(value)
    elif isinstance(data, list | tuple):
        for item in data:
            found |= sensitive_values(item)
    return found


def _print_error(command: str, exc: BaseException, code: int, redact: Iterable[str]) -> None:
    print(f"{PROG} {command}: {_KIND[code]} error: {error_line(exc, redact)}", file=sys.stderr)


def _print_json(document: dict[str, Any], out: TextIO | None = None) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2), file=out or sys.stdout)


# -- check -------------------------------------------------------------------------


class MailboxSession(Protocol):
    """The part of :class:`pop3_ingest.pop3.connection.Pop3Mailbox` that ``check`` uses."""

    capabilities: dict[str, list[str]]
    quit_ok: bool | None

    def __enter__(self) -> MailboxSession: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def list_messages(self) -> list[ServerMessage]: ...


Connect = Callable[[MailboxConfig, float], MailboxSession]


def _pop3_connect(config: MailboxConfig, timeout: float) -> MailboxSession:
    from pop3_ingest.pop3.connection import Pop3Mailbox

    return Pop3Mailbox(config, timeout=timeout)


@dataclass
class CheckReport:
    """What ``check`` found; filled in as far as the session got."""

    mailbox: str
    host: str
    port: int
    tls: str
    username: str
    delete: bool
    max_message_size: int
    login: bool = False
    capabilities: list[str] | None = None
    uidl: bool | None = None
    pipelining: bool | None = None
    messages: int | None = None
    total_bytes: int | None = None
    largest_bytes: int | None = None
    over_max_message_size: int | None = None
    quit: bool | None = None

    @classmethod
    def for_config(cls, config: MailboxConfig) -> CheckReport:
        return cls(
            mailbox=config.mailbox,
            host=config.host,
            port=config.port,
            tls=config.tls.value,
            username=config.username,
            delete=config.delete,
            max_message_size=config.max_message_size,
        )

    @property
    def certificate_verified(self) -> bool:
        return self.login and self.tls != TlsMode.NONE.value


def run_check(
    config: MailboxConfig, report: CheckReport, *, timeout: float, connect: Connect
) -> None:
    """Log in, read CAPA, UIDL and LIST, and QUIT. Never RETR, never DELE.

    ``report`` is filled in step by step, so a failure still shows how far it got.
    """
    with connect(config, timeout) as session:
        # Entering the session means TCP, TLS (verified) and the login all succeeded.
        report.login = True
        capa = session.capabilities
        report.capabilities = sorted(" ".join([name, *args]) for name, args in capa.items())
        report.uidl = "UIDL" in capa if capa else None  # no CAPA: unknown until UIDL is tried
        report.pipelining = "PIPELINING" in capa
        listing = session.list_messages()  # UIDL + LIST; also proves UIDL works
        report.uidl = True
        report.messages = len(listing)
        report.total_bytes = sum(m.size for m in listing)
        report.largest_bytes = max((m.size for m in listing), default=0)
        report.over_max_message_size = sum(1 for m in listing if m.size > config.max_message_size)
    report.quit = session.quit_ok


def _load_secret_file(path: str) -> tuple[MailboxConfig, set[str]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SecretError(f"secret file {path!r} is not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message names a position, never the file's content.
        raise SecretError(
            f"secret file {path!r} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from exc
    redact = sensitive_values(data)
    try:
        return MailboxConfig.from_secret(data), redact
    except SecretError as exc:
        raise SecretError(f"secret file {path!r}: {exc}", exc.field) from exc


def _load_config(args: argparse.Namespace) -> tuple[MailboxConfig, set[str]]:
    if args.secret_file is not None:
        return _load_secret_file(args.secret_file)
    from pop3_ingest.integrations.secrets import load_mailbox_config

    config = load_mailbox_config(args.secret_id)
    return config, sensitive_values(config)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "NO")


def _print_check_human(report: CheckReport, out: TextIO) -> None:
    lines: list[tuple[str, str]] = []
    if report.tls == TlsMode.NONE.value:
        tls = "no TLS (tls 'none'): the password crosses the network in clear text"
        if any(c == "STLS" for c in report.capabilities or []):
            tls += '; the server offers STLS, so set "tls": "starttls"'
    elif report.login:
        tls = f"TLS {report.tls}, certificate verified"
    else:
        tls = f"TLS {report.tls}"
    lines.append(("server", f"{report.host}:{report.port}, {tls}"))
    lines.append(("login", f"ok as {report.username!r}" if report.login else "not completed"))
    if report.capabilities is not None:
        lines.append(("capa", ", ".join(report.capabilities) or "(server sent no CAPA)"))
        uidl_note = "" if report.uidl or report.uidl is None else " (required by pop3-ingest)"
        lines.append(("uidl", _yes_no(report.uidl) + uidl_note))
        lines.append(("pipelining", _yes_no(report.pipelining)))
    if report.messages is not None and report.total_bytes is not None:
        text = f"{report.messages}, {_size(report.total_bytes)} ({report.total_bytes} bytes)"
        if report.messages:
            text += f"; largest {_size(report.largest_bytes or 0)}"
        if report.over_max_message_size:
            text += (
                f"; {report.over_max_message_size} over max_message_size "
                f"({_size(report.max_message_size)}) will be skipped"
            )
        lines.append(("messages", text))
    lines.append(
        (
            "delete",
            "yes, once stored and announced" if report.delete else "no (delete: false)",
        )
    )
    if report.quit is not None:
        ended = "ended with QUIT" if report.quit else "QUIT was not acknowledged"
        lines.append(("changed", f"nothing: no RETR, no DELE; {ended}"))
    print(f"mailbox {report.mailbox}", file=out)
    for name, value in lines:
        print(f"  {name:<11} {value}", file=out)


def cmd_check(args: argparse.Namespace, connect: Connect = _pop3_connect) -> int:
    redact: set[str] = set()
    report: CheckReport | None = None
    try:
        config, redact = _load_config(args)
        report = CheckReport.for_config(config)
        run_check(config, report, timeout=args.timeout, connect=connect)
    except Exception as exc:
        code = exit_code_for(exc)
        if args.json:
            document = dataclasses.asdict(report) if report else {}
            if report is not None:
                document["certificate_verified"] = report.certificate_verified
            document.update(
                ok=False,
                exit_code=code,
                error_kind=_KIND[code],
                error=error_line(exc, redact),
            )
            _print_json(document)
        else:
            if report is not None and report.login:
                _print_check_human(report, sys.stdout)
            _print_error("check", exc, code, redact)
        return code
    if args.json:
        document = dataclasses.asdict(report)
        document.update(
            ok=True, exit_code=EXIT_OK, certificate_verified=report.certificate_verified
        )
        _print_json(document)
    else:
        _print_check_human(report, sys.stdout)
    return EXIT_OK


# -- replay ------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    """One listed object: key, size and when it was written."""

    key: str
    size: int
    last_modified: datetime


@dataclass
class Rebuilt:
    entry: StoredEntry
    pointer: dict[str, Any] | None = None
    sha256_computed: bool = False
    error: str | None = None


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


def normalize_prefix(prefix: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or ".." in prefix:
        raise ConfigError("--key-prefix must be a relative prefix such as 'mail/'")
    return prefix


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


def list_stored(
    s3: S3Client, bucket: str, prefix: str, since: datetime | None, until: datetime | None
) -> tuple[int, list[StoredEntry]]:
    """Message objects directly under ``prefix`` (``*.eml``) written in [since, until).

    Returns how many message objects were listed and the ones in range, oldest first.
    """
    listed = 0
    in_range: list[StoredEntry] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            name = key[len(prefix) :]
            if "/" in name or not name.endswith(".eml"):
                continue  # not one of the function's message objects
            listed += 1
            written = obj["LastModified"].astimezone(UTC)
            if since is not None and written < since:
                continue
            if until is not None and written >= until:
                continue
            in_range.append(StoredEntry(key=key, size=int(obj["Size"]), last_modified=written))
    in_range.sort(key=lambda e: (e.last_modified, e.key))
    return listed, in_range


def rebuild_pointer(
    s3: S3Client, bucket: str, mailbox: str, entry: StoredEntry, *, compute_sha256: bool
) -> Rebuilt:
    """The pointer the function sent for this object, rebuilt from S3 alone.

    HEAD gives size and metadata (``sha256`` is there for all but streamed,
    multipart uploads); a ranged GET of the first 64 KiB gives the header
    fields. Without ``sha256`` metadata the whole object is read and hashed
    (unless ``compute_sha256`` is False, as in a dry run).
    """
    result = Rebuilt(entry)
    try:
        head = s3.head_object(Bucket=bucket, Key=entry.key)
        size = int(head["ContentLength"])
        metadata = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        sha256 = metadata.get("sha256", "").lower()
        if not _SHA256_HEX.match(sha256):
            sha256 = ""
        if not sha256 and compute_sha256:
            sha256, header_block = _hash_object(s3, bucket, entry.key, size)
            result.sha256_computed = True
        elif size == 0:
            header_block = b""
        else:
            ranged = s3.get_object(
                Bucket=bucket, Key=entry.key, Range=f"bytes=0-{_HEADER_BYTES - 1}"
            )
            header_block = ranged["Body"].read()
    except (ClientError, BotoCoreError, OSError, ValueError) as exc:
        result.error = error_line(exc)
        return result
    record = StoredMessage(
        bucket=bucket,
        key=entry.key,
        size=size,
        sha256=sha256,
        mailbox=mailbox,
        uidl="",
        headers=parse_header_fields(header_block),
        stored_at=entry.last_modified,
    )
    pointer = record.pointer()
    # The key holds a digest of the UIDL, not the UIDL: only metadata could give it back.
    pointer["uidl"] = metadata.get("uidl") or None
    pointer["sha256"] = sha256 or None
    pointer["replayed"] = True
    result.pointer = pointer
    return result


def _hash_object(s3: S3Client, bucket: str, key: str, size: int) -> tuple[str, bytes]:
    """SHA-256 and header block of the whole object, read as a stream."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    head = bytearray()
    read = 0
    try:
        for chunk in body.iter_chunks(_HASH_CHUNK):
            digest.update(chunk)
            read += len(chunk)
            if len(head) < _HEADER_BYTES:
                head += chunk[: _HEADER_BYTES - len(head)]
    finally:
        body.close()
    if read != size:
        raise ValueError(f"read {read} bytes of {key} but S3 reported {size}")
    return digest.hexdigest(), bytes(head)


class Announcer(Protocol):
    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]: ...


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


def _chunks(items: Sequence[StoredEntry], size: int) -> Iterator[Sequence[StoredEntry]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_replay(
    s3: S3Client,
    announcer: Announcer | None,
    summary: ReplaySummary,
    entries: Sequence[StoredEntry],
    report: Callable[[str, Rebuilt], None],
) -> None:
    """Rebuild and (unless ``announcer`` is None: dry run) send, ten at a time."""
    rebuild = functools.partial(
        rebuild_pointer, s3, summary.bucket, summary.mailbox, compute_sha256=announcer is not None
    )
    with ThreadPoolExecutor(max_workers=_REPLAY_WORKERS) as pool:
        for batch in _chunks(entries, _REPLAY_BATCH):
            rebuilt = list(pool.map(rebuild, batch))
            ready = [r for r in rebuilt if r.pointer is not None]
            for item in rebuilt:
                if item.error is not None:
                    summary.failed += 1
                    report("failed", item)
            if announcer is None:
                for item in ready:
                    report("would send", item)
                continue
            if not ready:
                continue
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
                    report("failed", item)
                else:
                    summary.sent += 1
                    report("sent", item)


def _aws_clients() -> tuple[S3Client, SQSClient]:
    import boto3
    from botocore.config import Config

    # Endpoints, region and credentials come only from the SDK's own configuration.
    config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5)
    session = boto3.session.Session()
    return session.client("s3", config=config), session.client("sqs", config=config)


def cmd_replay(args: argparse.Namespace) -> int:
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

    def report(status: str, item: Rebuilt) -> None:
        entry = item.entry
        row: dict[str, Any] = {
            "status": status,
            "key": entry.key,
            "size": entry.size,
            "stored_at": entry.last_modified.isoformat(timespec="seconds"),
        }
        if item.sha256_computed:
            row["sha256_computed"] = True
        if item.error:
            row["error"] = item.error
        if args.dry_run and item.pointer is not None:
            row["pointer"] = item.pointer
        summary.objects.append(row)
        if args.json:
            return
        subject = (item.pointer or {}).get("subject") or ""
        note = " (sha256 computed by reading the object)" if item.sha256_computed else ""
        line = f"{status:<10} {entry.key}  {_size(entry.size)}  {row['stored_at']}"
        if item.error:
            print(f"{line}  error: {item.error}", file=sys.stderr)
        else:
            print(f"{line}  {subject[:60]}{note}".rstrip())

    code = EXIT_OK
    try:
        check_window(since, until)
        prefix = mailbox_prefix(normalize_prefix(args.key_prefix), args.mailbox)
        summary.prefix = prefix
        s3, sqs = _aws_clients()
        summary.listed, entries = list_stored(s3, args.bucket, prefix, since, until)
        summary.in_range = len(entries)
        announcer: Announcer | None = None
        if not args.dry_run:
            from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer

            announcer = SqsAnnouncer(sqs, args.queue_url)
        run_replay(s3, announcer, summary, entries, report)
    except (ConfigError, ClientError, BotoCoreError, AnnounceError) as exc:
        code = exit_code_for(exc)
        if args.json:
            _print_json(
                {
                    **dataclasses.asdict(summary),
                    "ok": False,
                    "exit_code": code,
                    "error_kind": _KIND[code],
                    "error": error_line(exc),
                }
            )
        else:
            _print_replay_summary(summary)
            _print_error("replay", exc, code, ())
        return code
    if summary.failed:
        code = EXIT_FAILED
    if args.json:
        _print_json({**dataclasses.asdict(summary), "ok": code == EXIT_OK, "exit_code": code})
    else:
        _print_replay_summary(summary)
    return code


def _print_replay_summary(summary: ReplaySummary) -> None:
    window = f"[{summary.since or 'beginning'}, {summary.until or 'now'})"
    verb = "would be sent (dry run, nothing sent)" if summary.dry_run else "sent"
    count = len([o for o in summary.objects if o["status"] == "would send"])
    done = count if summary.dry_run else summary.sent
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


# -- argument parsing ----------------------------------------------------------------

_MAIN_DESCRIPTION = """\
Operator tools for pop3-ingest, the POP3 -> S3 -> SQS mail ingester.

AWS access (Secrets Manager, S3, SQS) uses the SDK's standard configuration:
AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL and friends.
"""

_EXIT_CODES = """\
exit codes:
  0  ok
  1  failed (protocol error, connection lost, AWS call failed, pointers not sent)
  2  usage, configuration or secret error
  3  TLS or connection error
  4  login rejected
  5  mailbox busy ([IN-USE], [LOGIN-DELAY], [SYS/TEMP]): try again later
"""

_MAIN_EPILOG = f"""\
examples:
  {PROG} check --secret-id pop3-ingest/support
  {PROG} check --secret-file support.json --json
  {PROG} replay --bucket my-mail --queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/q \\
      --mailbox support --since 2026-11-26T08:00:00Z --dry-run

Run '{PROG} <command> --help' for a command's options.

{_EXIT_CODES}"""

_CHECK_DESCRIPTION = """\
Connect to the mailbox of a secret, verify TLS (system trust plus the secret's
ca_cert) and the login, and show the server's capabilities (CAPA), the number
and total size of the messages waiting, and whether UIDL (required) and
PIPELINING (faster) are supported.

Nothing changes on the server: check sends no RETR and no DELE, and ends the
session with QUIT. It does log in, though: providers may record the login,
count it against rate limits, or (Gmail) alert the owner about a new sign-in.
The password is never printed.
"""

_CHECK_EPILOG = f"""\
examples:
  {PROG} check --secret-id pop3-ingest/support
  {PROG} check --secret-id arn:aws:secretsmanager:eu-west-1:123456789012:secret:mbx-AbCdEf
  {PROG} check --secret-file support.json       # before the secret exists
  {PROG} check --secret-file - --json < support.json

{_EXIT_CODES}"""

_REPLAY_DESCRIPTION = """\
Re-send the SQS pointers of messages already stored under
s3://BUCKET/<key-prefix><mailbox>/ whose LastModified (when they were written)
is in [--since, --until). Use it after a consumer bug, or when pointers expired
from the queue. The mail is only read, never changed.

Each pointer is rebuilt from S3 alone: size and sha256 from the object's
metadata (computed by reading the whole object when the metadata has none, as
for big streamed uploads), header fields from the first 64 KiB. The key holds a
digest of the UIDL, so replayed pointers carry "uidl": null, and they carry
"replayed": true. Pointers are sent in batches of ten, oldest first.
"""

_REPLAY_EPILOG = f"""\
examples:
  # what would be sent for one morning (reads S3, sends nothing)
  {PROG} replay --bucket my-mail --queue-url "$QUEUE_URL" --mailbox support \\
      --since 2026-11-26T06:00:00Z --until 2026-11-26T12:00:00Z --dry-run
  # everything stored for the mailbox since a date (UTC when no zone is given)
  {PROG} replay --bucket my-mail --queue-url "$QUEUE_URL" --mailbox support --since 2026-11-20

{_EXIT_CODES}"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    from pop3_ingest import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )

    check = commands.add_parser(
        "check",
        help="test a mailbox secret (TLS, login, CAPA, count); changes nothing",
        description=_CHECK_DESCRIPTION,
        epilog=_CHECK_EPILOG,
        formatter_class=_Formatter,
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--secret-id", metavar="ID", help="name or ARN of the mailbox secret in Secrets Manager"
    )
    source.add_argument(
        "--secret-file",
        metavar="PATH",
        help="a local JSON file with the secret's content ('-' reads stdin)",
    )
    check.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="connect and read timeout of every POP3 operation (default: 30)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=cmd_check)

    replay = commands.add_parser(
        "replay",
        help="re-send SQS pointers for messages stored in S3",
        description=_REPLAY_DESCRIPTION,
        epilog=_REPLAY_EPILOG,
        formatter_class=_Formatter,
    )
    replay.add_argument("--bucket", required=True, help="the mail bucket (BUCKET_NAME)")
    replay.add_argument(
        "--queue-url", required=True, metavar="URL", help="the pointer queue (QUEUE_URL)"
    )
    replay.add_argument(
        "--mailbox",
        required=True,
        help="mailbox name as in the keys and pointers (secret field 'mailbox')",
    )
    replay.add_argument(
        "--since",
        type=parse_time,
        metavar="ISO",
        help="only objects written at or after this time (ISO 8601; UTC without a zone)",
    )
    replay.add_argument(
        "--until",
        type=parse_time,
        metavar="ISO",
        help="only objects written before this time",
    )
    replay.add_argument(
        "--key-prefix",
        default="mail/",
        metavar="PREFIX",
        help="the function's KEY_PREFIX (default: mail/)",
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be sent, send nothing",
    )
    replay.add_argument("--json", action="store_true", help="print one JSON document")
    replay.set_defaults(handler=cmd_replay)

    quarantine = commands.add_parser(
        "quarantine",
        help="list or release messages quarantined after repeated failures",
        description=_QUARANTINE_DESCRIPTION,
        epilog=_QUARANTINE_EPILOG,
        formatter_class=_Formatter,
    )
    quarantine.add_argument("action", choices=("list", "release"), help="what to do")
    quarantine.add_argument("--bucket", required=True, help="the mail bucket (BUCKET_NAME)")
    quarantine.add_argument("--mailbox", required=True, help="mailbox name (secret 'mailbox')")
    quarantine.add_argument(
        "--digest",
        metavar="HEX",
        help="release only this message (its digest, as shown by 'list'); default: all",
    )
    quarantine.add_argument(
        "--key-prefix", default="mail/", metavar="PREFIX", help="the function's KEY_PREFIX"
    )
    quarantine.add_argument("--json", action="store_true", help="print one JSON document")
    quarantine.set_defaults(handler=cmd_quarantine)
    return parser


_QUARANTINE_DESCRIPTION = """\
A message that fails the same way POISON_THRESHOLD runs in a row is
quarantined: it stays on the POP3 server, is no longer downloaded, and is
described in <prefix>_quarantine/<mailbox>/<digest>.json. 'list' shows those
records; 'release' removes them and clears the message from the mailbox's run
state, so the next run tries it again. It is safe while a run is working the
mailbox: state writes are conditional and merged, so neither side undoes the other.
"""

_QUARANTINE_EPILOG = f"""\
examples:
  {PROG} quarantine list --bucket my-mail --mailbox support
  {PROG} quarantine release --bucket my-mail --mailbox support --digest 3f2a...

{_EXIT_CODES}"""


def cmd_quarantine(args: argparse.Namespace) -> int:
    from pop3_ingest.integrations.s3_state import S3StateStore

    s3, _ = _aws_clients()
    prefix = normalize_prefix(args.key_prefix)
    store = S3StateStore(s3, args.bucket, prefix)
    record_prefix = store.quarantine_prefix(args.mailbox)
    try:
        records: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=args.bucket, Prefix=record_prefix
        ):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=args.bucket, Key=item["Key"])["Body"].read()
                digest = item["Key"].rsplit("/", 1)[-1].removesuffix(".json")
                records.append({"digest": digest, **json.loads(body)})
        if args.action == "list":
            if args.json:
                _print_json({"mailbox": args.mailbox, "quarantined": records})
            elif not records:
                print(f"no quarantined messages for {args.mailbox}")
            for record in records if not args.json else []:
                print(
                    f"{record['digest']}  size={record.get('size')}  "
                    f"failures={record.get('failures')}  error={record.get('error')}"
                )
            return EXIT_OK
        chosen = [r for r in records if args.digest in (None, r["digest"])]
        if args.digest and not chosen:
            print(f"{PROG} quarantine: no quarantined message {args.digest}", file=sys.stderr)
            return EXIT_FAILED
        current = store.read(args.mailbox)
        state = current.state.copy()
        for record in chosen:
            state.release(record["digest"])
            s3.delete_object(
                Bucket=args.bucket, Key=store.quarantine_key(args.mailbox, record["digest"])
            )
        # Conditional and merged: a run saving meanwhile keeps its work, and
        # this release survives the run's own final save.
        store.write(args.mailbox, state, current)
    except (ClientError, BotoCoreError, Pop3IngestError, ValueError) as exc:
        _print_error("quarantine", exc, exit_code_for(exc), ())
        return exit_code_for(exc)
    if args.json:
        _print_json({"mailbox": args.mailbox, "released": [r["digest"] for r in chosen]})
    else:
        print(f"released {len(chosen)} message(s) of {args.mailbox}; the next run retries them")
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits with 2)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
