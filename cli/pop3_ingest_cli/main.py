"""The operator's command line: ``pop3-ingest check``, ``replay``, ``quarantine`` and ``mailbox``.

This module wires argparse to the commands (:mod:`.check`, :mod:`.replay`,
:mod:`.quarantine`, :mod:`.mailbox`) and turns what argparse and Ctrl-C do into
exit codes; :mod:`.errors` documents every code and which error gets which.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pop3_ingest.config import DEFAULT_POP3_TIMEOUT_SECONDS
from pop3_ingest_cli.check import ALLOW_FLAG, cmd_check
from pop3_ingest_cli.errors import EXIT_CONFIG, EXIT_INTERRUPTED
from pop3_ingest_cli.mailbox import DEPLOYMENT_OPTIONS, cmd_mailbox
from pop3_ingest_cli.quarantine import cmd_quarantine
from pop3_ingest_cli.render import PROG
from pop3_ingest_cli.replay import cmd_replay, parse_time

_MAIN_DESCRIPTION = """\
Operator tools for pop3-ingest, the POP3 -> S3 -> SQS mail ingester.

AWS access (Secrets Manager, S3, SQS, EventBridge Scheduler) uses the SDK's
standard configuration: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL and friends.
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
  {PROG} check --secret-file local.json --allow-private-hosts   # a server on 10.x or localhost

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


_MAILBOX_DESCRIPTION = """\
Mode fleet: start or stop polling a mailbox at once. 'add' checks the secret
as the function would, writes --interval into it (its interval_minutes) when
given, tags it MAILBOX_TAG_KEY=MAILBOX_TAG_VALUE (default pop3-ingest=enabled)
and creates its EventBridge Scheduler schedule; 'remove' untags it and deletes
the schedule; 'list' shows every tagged secret and whether its schedule is in
place. The reconciler function does the same on its own (on tag changes, daily
and after each deploy); this is its code, run from here.

The deployment is named by the stack's outputs ScheduleGroupName, JobsQueueArn
and SchedulerRoleArn: the options below, or the variables SCHEDULE_GROUP,
JOBS_QUEUE_ARN and SCHEDULER_ROLE_ARN.
"""

_MAILBOX_EPILOG = f"""\
examples:
  {PROG} mailbox add pop3/support --interval 10
  {PROG} mailbox remove pop3/support
  {PROG} mailbox list --json

{_EXIT_CODES}"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _mail_location_options(command: argparse.ArgumentParser) -> None:
    """--bucket, --mailbox and --key-prefix: where the function keeps a mailbox's objects."""
    command.add_argument("--bucket", required=True, help="the mail bucket (BUCKET_NAME)")
    command.add_argument(
        "--mailbox",
        required=True,
        help="mailbox name as in the keys and pointers (secret field 'mailbox')",
    )
    command.add_argument(
        "--key-prefix",
        default="mail/",
        metavar="PREFIX",
        help="the function's KEY_PREFIX (default: mail/)",
    )


def _check_options(check: argparse.ArgumentParser) -> None:
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
        default=DEFAULT_POP3_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="connect and read timeout of every POP3 operation (default: %(default)s)",
    )
    check.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="connect even if the host or token URL resolves to a loopback, private or other "
        "non-public address (refused by default, as in the function: ALLOW_PRIVATE_HOSTS)",
    )


def _replay_options(replay: argparse.ArgumentParser) -> None:
    _mail_location_options(replay)
    replay.add_argument(
        "--queue-url", required=True, metavar="URL", help="the pointer queue (QUEUE_URL)"
    )
    replay.add_argument(
        "--since",
        type=parse_time,
        metavar="ISO",
        help="only objects written at or after this time (ISO 8601; UTC without a zone)",
    )
    replay.add_argument(
        "--until", type=parse_time, metavar="ISO", help="only objects written before this time"
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be sent, send nothing"
    )


def _quarantine_options(quarantine: argparse.ArgumentParser) -> None:
    quarantine.add_argument("action", choices=("list", "release"), help="what to do")
    _mail_location_options(quarantine)
    quarantine.add_argument(
        "--digest",
        metavar="HEX",
        help="release only this message (its digest, as shown by 'list'); default: all",
    )


def _interval(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of minutes: {text!r}") from None


def _mailbox_options(mailbox: argparse.ArgumentParser) -> None:
    mailbox.add_argument("action", choices=("add", "remove", "list"), help="what to do")
    mailbox.add_argument("secret", nargs="?", metavar="SECRET", help="name or ARN of the secret")
    mailbox.add_argument(
        "--interval",
        type=_interval,
        metavar="MINUTES",
        help="add: minutes between runs, written to the secret's interval_minutes",
    )
    for option, variable in DEPLOYMENT_OPTIONS.items():
        mailbox.add_argument(
            f"--{option.replace('_', '-')}",
            dest=option,
            metavar=variable,
            help=f"default: ${variable}",
        )


@dataclass(frozen=True)
class _Command:
    name: str
    summary: str
    description: str
    epilog: str
    handler: Callable[[argparse.Namespace], int]
    add_options: Callable[[argparse.ArgumentParser], None]


_COMMANDS = (
    _Command(
        "check",
        "test a mailbox secret (TLS, login, CAPA, count); changes nothing",
        _CHECK_DESCRIPTION,
        _CHECK_EPILOG,
        cmd_check,
        _check_options,
    ),
    _Command(
        "replay",
        "re-send SQS pointers for messages stored in S3",
        _REPLAY_DESCRIPTION,
        _REPLAY_EPILOG,
        cmd_replay,
        _replay_options,
    ),
    _Command(
        "quarantine",
        "list or release messages quarantined after repeated failures",
        _QUARANTINE_DESCRIPTION,
        _QUARANTINE_EPILOG,
        cmd_quarantine,
        _quarantine_options,
    ),
    _Command(
        "mailbox",
        "Mode fleet: add, remove or list mailboxes (tag and schedule at once)",
        _MAILBOX_DESCRIPTION,
        _MAILBOX_EPILOG,
        cmd_mailbox,
        _mailbox_options,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    from pop3_ingest import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for spec in _COMMANDS:
        command = commands.add_parser(
            spec.name,
            help=spec.summary,
            description=spec.description,
            epilog=spec.epilog,
            formatter_class=_Formatter,
        )
        spec.add_options(command)
        command.add_argument("--json", action="store_true", help="print one JSON document")
        command.set_defaults(handler=spec.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (see :mod:`pop3_ingest_cli.errors`)."""
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
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
