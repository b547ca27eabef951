"""``pop3-ingest check``: the "test settings" button for a mailbox secret.

It logs in, shows what the server offers and how much mail waits, and changes
nothing: no RETR, no DELE, and the session ends with QUIT.

The secret may have been written by a tenant, so check holds its host and
token URL to the same rule as the function (pop3_ingest.netguard): public
addresses only. ``--allow-private-hosts`` lifts it for one run, as
ALLOW_PRIVATE_HOSTS=true does for a deployment. The operator's shell is not
the function's environment: check reads the flag, never the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.errors import ConfigError, SecretError
from pop3_ingest.netguard import AddressPolicy
from pop3_ingest.redaction import secret_values
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory
from pop3_ingest_cli.secret_source import read_secret
from pop3_ingest_cli.stack import deployment

if TYPE_CHECKING:
    from pop3_ingest.domain.message import ServerMessage


class MailboxSession(Protocol):
    """The part of :class:`pop3_ingest.pop3.Pop3Mailbox` that ``check`` uses."""

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


# The command line's way to lift the address rule (the function's is ALLOW_PRIVATE_HOSTS).
ALLOW_FLAG = "--allow-private-hosts"


def pop3_connect(address_policy: AddressPolicy) -> Connect:
    """Real POP3 sessions whose host and token URL are held to ``address_policy``."""

    def connect(config: MailboxConfig, timeout: float) -> MailboxSession:
        from pop3_ingest.pop3 import Pop3Mailbox  # imported on first use: --help stays quick

        return Pop3Mailbox(config, timeout=timeout, address_policy=address_policy)

    return connect


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


def _read_secret_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SecretError(f"secret file {path!r} is not UTF-8 text") from exc


def load_secret_file(path: str) -> tuple[MailboxConfig, set[str]]:
    """The config in a local secret file ('-': stdin) and the values never to print."""
    text = _read_secret_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message names a position, never the file's content.
        raise SecretError(
            f"secret file {path!r} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from exc
    secrets = set(secret_values(data))
    try:
        return MailboxConfig.from_secret(data), secrets
    except SecretError as exc:
        raise SecretError(f"secret file {path!r}: {exc}", exc.field) from exc


def load_config(args: argparse.Namespace, aws: AwsFactory) -> tuple[MailboxConfig, set[str]]:
    if args.secret_file is not None:
        return load_secret_file(args.secret_file)
    if not (args.secret_id or args.stack_name):
        raise ConfigError("give --secret-id, --secret-file, or --stack-name (its SecretArn)")
    session = aws(args)
    # Neither option: the stack's own mailbox secret (its SecretArn output).
    secret_id = args.secret_id or deployment(args, session).need("secret_id")
    config, secrets = read_secret(session.secretsmanager, secret_id)
    return config, secrets | set(config.secret_values())


def cmd_check(
    args: argparse.Namespace, connect: Connect | None = None, aws: AwsFactory = Aws.from_args
) -> int:
    if connect is None:
        policy = AddressPolicy(allow_private=args.allow_private_hosts, switch=ALLOW_FLAG)
        connect = pop3_connect(policy)
    secrets: set[str] = set()
    report: CheckReport | None = None
    error: Exception | None = None
    try:
        config, secrets = load_config(args, aws)
        report = CheckReport.for_config(config)
        run_check(config, report, timeout=args.timeout, connect=connect)
    except Exception as exc:  # every failure becomes its exit code and one clear line
        error = exc
    document = {}
    if report is not None:
        document = {
            **dataclasses.asdict(report),
            "certificate_verified": report.certificate_verified,
        }

    def show() -> None:
        # Until the login succeeded there is nothing to show but the error.
        if report is not None and report.login:
            render.print_check(report)

    outcome = render.Outcome("check", document, show, error, secrets=frozenset(secrets))
    return render.emit(outcome, as_json=args.json)
