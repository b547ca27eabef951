"""The operator's command line: ``pop3-ingest status``, ``check``, ``run``, ``resume``,
``replay``, ``quarantine`` and ``mailbox``.

This module wires argparse to the commands (one module each) and turns what
argparse, Ctrl-C and anything unforeseen do into exit codes: no command ever
ends in a traceback. :mod:`.errors` documents every code; :mod:`.helptext`
holds what ``--help`` says.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import DEFAULT_KEY_PREFIX, DEFAULT_POP3_TIMEOUT_SECONDS, Mode
from pop3_ingest.errors import Pop3IngestError
from pop3_ingest_cli import helptext, oauth
from pop3_ingest_cli.check import ALLOW_FLAG, cmd_check
from pop3_ingest_cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, error_line
from pop3_ingest_cli.mailbox import DEPLOYMENT_OPTIONS, cmd_mailbox
from pop3_ingest_cli.quarantine import cmd_quarantine
from pop3_ingest_cli.render import PROG, print_error
from pop3_ingest_cli.replay import cmd_replay, parse_time
from pop3_ingest_cli.resume import cmd_resume
from pop3_ingest_cli.run import cmd_run
from pop3_ingest_cli.status import cmd_status


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


def _aws_options(command: argparse.ArgumentParser) -> None:
    """Every command: which deployment, account and region."""
    group = command.add_argument_group("AWS")
    group.add_argument(
        "--stack-name",
        metavar="STACK",
        help="read the bucket, queues, key prefix and function from this stack's outputs",
    )
    group.add_argument("--region", metavar="REGION", help="AWS region (default: the SDK's)")
    group.add_argument("--profile", metavar="PROFILE", help="AWS profile (default: the SDK's)")


def _mail_location_options(command: argparse.ArgumentParser, *, mailbox: str) -> None:
    """--bucket, --key-prefix and --mailbox (``mailbox``: required, optional or absent)."""
    command.add_argument("--bucket", help="the mail bucket (BUCKET_NAME; or --stack-name)")
    command.add_argument(
        "--key-prefix",
        metavar="PREFIX",
        help=f"the function's KEY_PREFIX (default: the stack's, else {DEFAULT_KEY_PREFIX})",
    )
    if mailbox != "absent":
        command.add_argument(
            "--mailbox",
            required=mailbox == "required",
            help="mailbox name as in the keys and pointers (secret field 'mailbox')",
        )


def _check_options(check: argparse.ArgumentParser) -> None:
    source = check.add_mutually_exclusive_group()
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
    _mail_location_options(replay, mailbox="required")
    replay.add_argument(
        "--queue-url", metavar="URL", help="the pointer queue (QUEUE_URL; or --stack-name)"
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
    quarantine.add_argument("action", choices=("list", "release", "drop"), help="what to do")
    _mail_location_options(quarantine, mailbox="required")
    quarantine.add_argument(
        "--digest",
        metavar="HEX",
        help="release or drop only this message (its digest, as 'list' shows it)",
    )
    quarantine.add_argument("--uidl", metavar="UIDL", help="drop: the message with this UIDL")
    quarantine.add_argument("--key", metavar="KEY", help="drop: the record with this S3 key")


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
            help=f"default: the stack's output, else ${variable}",
        )


def _mode_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        help="the deployment's Mode (default: the stack's; without a stack, single)",
    )


def _status_options(status: argparse.ArgumentParser) -> None:
    _mail_location_options(status, mailbox="optional")
    _mode_option(status)
    status.add_argument(
        "--stale-after",
        type=_positive_float,
        metavar="HOURS",
        help="a mailbox with no completed run for this long is stale "
        "(default: the stack's StaleAfterHours, else 3)",
    )


def _resume_options(resume: argparse.ArgumentParser) -> None:
    _mail_location_options(resume, mailbox="required")


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--mailbox", help="the mailbox to run (the secret's 'mailbox')")
    run.add_argument("--secret-id", metavar="ID", help="the mailbox secret to run, by name or ARN")
    _mode_option(run)
    run.add_argument(
        "--function-name", metavar="NAME", help="Mode single: the fetch function (FunctionName)"
    )
    run.add_argument(
        "--jobs-queue-url", metavar="URL", help="Mode fleet: the jobs queue (JobsQueueUrl)"
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
        "status",
        "each mailbox's health: last run and error, suspended, backing off, quarantined",
        helptext.STATUS_DESCRIPTION,
        helptext.STATUS_EPILOG,
        cmd_status,
        _status_options,
    ),
    _Command(
        "check",
        "test a mailbox secret (TLS, login, CAPA, count); changes nothing",
        helptext.CHECK_DESCRIPTION,
        helptext.CHECK_EPILOG,
        cmd_check,
        _check_options,
    ),
    _Command(
        "run",
        "fetch one mailbox now, through the deployed function",
        helptext.RUN_DESCRIPTION,
        helptext.RUN_EPILOG,
        cmd_run,
        _run_options,
    ),
    _Command(
        "resume",
        "lift a mailbox's login suspension and back-off",
        helptext.RESUME_DESCRIPTION,
        helptext.RESUME_EPILOG,
        cmd_resume,
        _resume_options,
    ),
    _Command(
        "replay",
        "re-send SQS pointers for messages stored in S3",
        helptext.REPLAY_DESCRIPTION,
        helptext.REPLAY_EPILOG,
        cmd_replay,
        _replay_options,
    ),
    _Command(
        "quarantine",
        "list, release or drop messages quarantined after repeated failures",
        helptext.QUARANTINE_DESCRIPTION,
        helptext.QUARANTINE_EPILOG,
        cmd_quarantine,
        _quarantine_options,
    ),
    _Command(
        "mailbox",
        "Mode fleet: add, remove or list mailboxes (tag and schedule at once)",
        helptext.MAILBOX_DESCRIPTION,
        helptext.MAILBOX_EPILOG,
        cmd_mailbox,
        _mailbox_options,
    ),
    _Command(
        "oauth", oauth.SUMMARY, oauth.DESCRIPTION, oauth.EPILOG, oauth.cmd_oauth, oauth.add_options
    ),
)


def build_parser() -> argparse.ArgumentParser:
    from pop3_ingest import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=helptext.MAIN_DESCRIPTION,
        epilog=helptext.MAIN_EPILOG,
        formatter_class=_Formatter,
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
        _aws_options(command)
        command.set_defaults(handler=spec.handler)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """The command's code; what escaped it is one line, never a traceback."""
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): nothing left to say, and nothing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (ClientError, BotoCoreError, Pop3IngestError, OSError) as exc:
        return print_error(args.command, exc)
    except Exception as exc:  # a bug: still one line, and where to report it
        print(
            f"{PROG} {args.command}: unexpected error: {type(exc).__name__}: {error_line(exc)} "
            "(please report it with the command that caused it)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (see :mod:`pop3_ingest_cli.errors`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits with 2)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
