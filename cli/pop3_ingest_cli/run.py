"""``pop3-ingest run``: fetch one mailbox now, through the deployed function.

Mode single: the fetch function is invoked synchronously with an event
naming the mailbox's secret (as a scheduled event, plus ``secret_id``), and
its result is shown. The run follows the same policy as a scheduled one: one
suspended or backing off says so (``pop3-ingest resume``), and where the
secret sets ``interval_minutes``, one that ran less than that ago is "not due".

Mode fleet: a job goes to the jobs queue in the mailbox's own message group,
exactly as its schedule sends one (``scheduled_at`` is now, so it is not
skipped as "not due"). The function takes it after any job of that mailbox
already queued: runs of one mailbox never overlap. Its outcome is in the
function's log and, once saved, in ``pop3-ingest status``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest import errors as function_errors
from pop3_ingest.domain.schedules import message_group_id, secret_name_of
from pop3_ingest.domain.summary import StopReason
from pop3_ingest.errors import ConfigError, Pop3IngestError
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory, mailbox_name
from pop3_ingest_cli.errors import EXIT_AUTH, EXIT_BUSY, EXIT_OK
from pop3_ingest_cli.progress import Progress
from pop3_ingest_cli.secret_source import read_secret
from pop3_ingest_cli.stack import Deployment, deployment
from pop3_ingest_cli.states import tagged_mailboxes

# Lambda runs a function for at most 15 minutes; the answer may take that long.
_LAMBDA_MAX_SECONDS = 900
# One attempt only: a retried invoke would be a second run of the mailbox.
INVOKE_CONFIG = Config(
    connect_timeout=5,
    read_timeout=_LAMBDA_MAX_SECONDS + 60,
    retries={"mode": "standard", "total_max_attempts": 1},
)

# How a run that returned without doing the work is told, and its exit code.
_NOT_RUN: dict[str, tuple[int, str]] = {
    StopReason.AUTH_SUSPENDED: (
        EXIT_AUTH,
        "logins are suspended after repeated failures: fix the secret, or "
        "'pop3-ingest resume --mailbox {m}' once the provider lets it in",
    ),
    StopReason.BACKOFF: (
        EXIT_BUSY,
        "backing off (the server was busy or unreachable): 'pop3-ingest status --mailbox {m}' "
        "says until when; 'pop3-ingest resume --mailbox {m}' clears it",
    ),
    StopReason.NOT_DUE: (
        EXIT_BUSY,
        "not due: it ran less than its secret's interval_minutes ago; "
        "its next scheduled run takes it",
    ),
    StopReason.LOCKED: (EXIT_BUSY, "another run is working the mailbox right now"),
    StopReason.BUSY: (EXIT_BUSY, "the server said busy; the mailbox backs off"),
}


class FunctionFailed(Pop3IngestError):
    """The function ran and raised (or timed out): its error type and message."""


def remote_error(error_type: str, message: str) -> Exception:
    """The function's error as this package's own type where it is one, so it gets
    the documented exit code (an AuthError exits 4, a SecretError 2...)."""
    text = f"the function failed: {error_type}: {message}"
    kind = getattr(function_errors, error_type, None)
    if isinstance(kind, type) and issubclass(kind, Pop3IngestError):
        error = kind.__new__(kind)
        error.args = (text,)
        return error
    return FunctionFailed(text)


@dataclass(frozen=True)
class Target:
    mailbox: str | None
    secret_id: str


def _single_secret(where: Deployment, session: Aws) -> str:
    """The function's own mailbox secret: the stack's SecretArn, else its SECRET_ID."""
    if where.secret_id:
        return where.secret_id
    client = session.lambda_client(INVOKE_CONFIG)
    environment = client.get_function_configuration(FunctionName=where.need("function_name"))
    secret = environment.get("Environment", {}).get("Variables", {}).get("SECRET_ID")
    if not secret:
        raise ConfigError("the function has no SECRET_ID: give --secret-id")
    return secret


def target(args: argparse.Namespace, where: Deployment, session: Aws, progress: Progress) -> Target:
    """The secret to run: ``--secret-id``, or the one whose ``mailbox`` is ``--mailbox``."""
    if args.secret_id:
        return Target(args.mailbox, args.secret_id)
    name = mailbox_name(args.mailbox)
    if where.fleet:
        found = tagged_mailboxes(session.secretsmanager, progress).mailboxes.get(name)
        if found is None:
            raise ConfigError(f"no mailbox {name!r}: no tagged secret names it")
        return Target(name, found.secret)
    secret = _single_secret(where, session)
    config, _ = read_secret(session.secretsmanager, secret)
    if config.mailbox != name:
        raise ConfigError(
            f"no mailbox {name!r} in this deployment: its secret is mailbox "
            f"{config.mailbox!r} (for another secret the function may read, give --secret-id)"
        )
    return Target(name, secret)


def invoke(session: Aws, function_name: str, secret_id: str) -> dict[str, Any]:
    """One synchronous run; the function's result, or its error raised here."""
    client = session.lambda_client(INVOKE_CONFIG)
    response = client.invoke(
        FunctionName=function_name,
        InvocationType="RequestResponse",
        Payload=json.dumps({"secret_id": secret_id}).encode(),
    )
    raw = response["Payload"].read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = None
    if response.get("FunctionError"):
        answer = payload if isinstance(payload, dict) else {}
        kind = str(answer.get("errorType") or response["FunctionError"])
        raise remote_error(kind, str(answer.get("errorMessage") or "no message"))
    if not isinstance(payload, dict):
        raise FunctionFailed(f"the function answered what is not a run's result: {raw[:200]!r}")
    return payload


def enqueue(session: Aws, queue_url: str, secret_id: str) -> str:
    """A job, as the mailbox's schedule sends it; returns its SQS message id."""
    name = secret_name_of(secret_id)
    # To the microsecond: a run that started before this job is older than its tick.
    body = {"secret_id": name, "scheduled_at": datetime.now(UTC).isoformat()}
    answer = session.sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(body),
        MessageGroupId=message_group_id(name),  # the schedule's group: one run at a time
        MessageDeduplicationId=uuid.uuid4().hex,
    )
    return answer["MessageId"]


def _single_outcome(target: Target, result: dict[str, Any]) -> render.Outcome:
    mailbox = str(result.get("mailbox") or target.mailbox)
    code, hint = _NOT_RUN.get(str(result.get("stopped")), (EXIT_OK, ""))
    document: dict[str, Any] = {"mode": "single", "mailbox": mailbox}
    document["secret_id"] = target.secret_id
    document |= {"result": result, "hint": hint.format(m=mailbox) or None}

    def show() -> None:
        print(f"run {mailbox}: {result.get('stopped')} in {result.get('duration_ms', '?')} ms")
        print(
            f"  on server {result.get('messages_on_server', 0)}, stored {result.get('stored', 0)} "
            f"({render.human_size(int(result.get('bytes', 0)))}), deleted "
            f"{result.get('deleted', 0)}, left on server {result.get('left_on_server', 0)}"
        )
        if document["hint"]:
            print(f"  {document['hint']}")

    return render.Outcome("run", document, show, verdict=code)


def _fleet_outcome(target: Target, message_id: str) -> render.Outcome:
    mailbox = target.mailbox or secret_name_of(target.secret_id)
    document: dict[str, Any] = {"mode": "fleet", "mailbox": target.mailbox}
    document["secret_id"] = target.secret_id
    document |= {"queued": True, "message_id": message_id}

    def show() -> None:
        print(f"queued a run of {mailbox} (secret {target.secret_id}), job {message_id}")
        print(
            "  the function takes it after any job of this mailbox already queued; "
            f"its outcome: 'pop3-ingest status --mailbox {mailbox}' or the function's log"
        )

    return render.Outcome("run", document, show)


def _run(args: argparse.Namespace, session: Aws, progress: Progress) -> render.Outcome:
    where = deployment(args, session)
    if where.mode is None and where.jobs_queue_url and not where.function_name:
        where = dataclasses.replace(where, mode="fleet")
    chosen = target(args, where, session, progress)
    if where.fleet:
        message_id = enqueue(session, where.need("jobs_queue_url"), chosen.secret_id)
        return _fleet_outcome(chosen, message_id)
    function_name = where.need("function_name")
    progress.note(f"running {chosen.mailbox or chosen.secret_id} in {function_name}...")
    try:
        result = invoke(session, function_name, chosen.secret_id)
    finally:
        progress.done()
    return _single_outcome(chosen, result)


def cmd_run(args: argparse.Namespace, aws: AwsFactory = Aws.from_args) -> int:
    progress = Progress("run", as_json=args.json)
    try:
        if not (args.mailbox or args.secret_id):
            raise ConfigError("give --mailbox NAME or --secret-id ID")  # before any AWS call
        outcome = _run(args, aws(args), progress)
    except (ClientError, BotoCoreError, Pop3IngestError) as exc:
        progress.done()
        document = {"mailbox": args.mailbox, "secret_id": args.secret_id}
        outcome = render.Outcome("run", document, lambda: None, error=exc)
    return render.emit(outcome, as_json=args.json)
