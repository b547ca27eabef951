"""``pop3-ingest mailbox add|remove|list``: Mode fleet's mailboxes, changed at once.

``add`` tags the secret as a mailbox and gives it its schedule; ``remove``
untags it and deletes the schedule; ``list`` shows the tagged secrets and their
schedules. It is the reconciler's own code (pop3_ingest.domain.reconcile), run
from here, so nothing waits for the reconciler to notice the tag.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import FleetSettings, MailboxConfig
from pop3_ingest.domain.reconcile import WORKERS, Change, Reconciler, ReconcileReport, Survey
from pop3_ingest.domain.schedules import schedule_name, secret_name_of
from pop3_ingest.errors import ConfigError, Pop3IngestError, ScheduleError, SecretError
from pop3_ingest.integrations.scheduler import EventBridgeSchedules, SchedulerApi, TaggedSecrets
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory
from pop3_ingest_cli.stack import stack_values

Build = Callable[[FleetSettings], tuple[Reconciler, TaggedSecrets]]
# As the reconciler's clients: a big survey runs WORKERS calls at once, and the
# Scheduler's rate quotas are met by slowing down (adaptive), not by failing.
FLEET_CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=20,
    max_pool_connections=WORKERS,
)
# The options that name the deployment, and the variables they default to.
DEPLOYMENT_OPTIONS = {
    "schedule_group": "SCHEDULE_GROUP",
    "jobs_queue_arn": "JOBS_QUEUE_ARN",
    "scheduler_role_arn": "SCHEDULER_ROLE_ARN",
}


def fleet_settings(
    args: argparse.Namespace, stack: Mapping[str, str] | None = None
) -> FleetSettings:
    """The deployment's fleet settings: the environment, the stack's outputs over it
    (``--stack-name``), and the options given over both."""
    from_stack = {
        env: (stack or {})[option]
        for option, env in DEPLOYMENT_OPTIONS.items()
        if (stack or {}).get(option)
    }
    given = {
        env: getattr(args, option)
        for option, env in DEPLOYMENT_OPTIONS.items()
        if getattr(args, option)
    }
    return FleetSettings.from_env({**os.environ, **from_stack, **given})


def session_reconciler(session: Aws) -> Build:
    """The reconciler's own code over the command's Session (``--profile``, ``--region``)."""

    def build(settings: FleetSettings) -> tuple[Reconciler, TaggedSecrets]:
        client = session.session.client
        secrets = TaggedSecrets(client("secretsmanager", config=FLEET_CLIENT_CONFIG), settings)
        scheduler = cast(SchedulerApi, client("scheduler", config=FLEET_CLIENT_CONFIG))
        schedules = EventBridgeSchedules(scheduler, settings)
        return Reconciler(secrets, schedules, enabled=settings.schedules_enabled), secrets

    return build


def with_interval(secret_text: str, minutes: int | None) -> str:
    """The secret's JSON with ``interval_minutes`` set (unchanged when ``minutes`` is None);
    refused as the function would refuse it (the error names the field, never a value)."""
    try:
        data = json.loads(secret_text)
    except ValueError:
        raise SecretError("the mailbox secret is not JSON") from None
    if minutes is None or not isinstance(data, dict) or data.get("interval_minutes") == minutes:
        MailboxConfig.from_secret(data)
        return secret_text
    data["interval_minutes"] = minutes
    MailboxConfig.from_secret(data)
    return json.dumps(data)


def _prepare_secret(secrets: TaggedSecrets, secret_id: str, minutes: int | None) -> None:
    """Refuse a secret the function would refuse; write the new interval into it."""
    current = secrets.client.get_secret_value(SecretId=secret_id).get("SecretString")
    if current is None:
        raise SecretError("the mailbox secret holds no text (SecretString)")
    updated = with_interval(current, minutes)
    if updated != current:
        secrets.client.put_secret_value(SecretId=secret_id, SecretString=updated)


def _add(
    args: argparse.Namespace, reconciler: Reconciler, secrets: TaggedSecrets
) -> ReconcileReport:
    _prepare_secret(secrets, args.secret, args.interval)
    secrets.enable(args.secret)
    return reconciler.schedule_secret(args.secret)


def _remove(
    args: argparse.Namespace, reconciler: Reconciler, secrets: TaggedSecrets
) -> ReconcileReport:
    # Untagged first: a schedule that outlives a failure here is deleted by the
    # next reconcile, while a tag that outlived its schedule would bring it back.
    secrets.disable(args.secret)
    return reconciler.unschedule_secret(args.secret)


def survey_document(survey: Survey) -> dict[str, Any]:
    """Every tagged secret with its schedule's status, and schedules no secret wants."""
    pending = {secret.name for secret in survey.plan.to_write}
    mailboxes = []
    for secret in sorted(survey.secrets, key=lambda s: s.name):
        if secret.name not in pending:
            status = "scheduled"
        elif survey.plan.has_schedule(secret.name):
            status = "outdated"
        else:
            status = "missing"
        mailboxes.append(
            {"secret": secret.name, "schedule": schedule_name(secret.name), "status": status}
        )
    return {"mailboxes": mailboxes, "orphaned_schedules": list(survey.plan.to_delete)}


def _change_document(args: argparse.Namespace, report: ReconcileReport) -> dict[str, Any]:
    name = secret_name_of(args.secret)
    (change,) = [c for c, n in report.changes.items() if n] or [Change.UNCHANGED]
    return {
        "action": args.action,
        "secret": name,
        "schedule": schedule_name(name),
        "change": change.value,
        "problems": report.problems,
    }


def _outcome(args: argparse.Namespace, build: Build | None, session: Aws) -> render.Outcome:
    stack = stack_values(session.cloudformation, args.stack_name) if args.stack_name else None
    settings = fleet_settings(args, stack)
    reconciler, secrets = (build or session_reconciler(session))(settings)
    if args.action == "list":
        document = survey_document(reconciler.survey())
        return render.Outcome("mailbox", document, lambda: render.print_mailboxes(document))
    report = (_add if args.action == "add" else _remove)(args, reconciler, secrets)
    document = _change_document(args, report)
    error = None if report.complete else ScheduleError("; ".join(report.problems) or "failed")
    return render.Outcome(
        "mailbox", document, lambda: render.print_mailbox_change(document), error=error
    )


def check_arguments(args: argparse.Namespace) -> None:
    if args.action == "list" and args.secret:
        raise ConfigError("'mailbox list' takes no SECRET")
    if args.action != "list" and not args.secret:
        raise ConfigError(f"'mailbox {args.action}' needs the SECRET (name or ARN)")
    if args.interval is not None and args.action != "add":
        raise ConfigError("--interval goes with 'mailbox add' only")


def cmd_mailbox(
    args: argparse.Namespace, build: Build | None = None, aws: AwsFactory = Aws.from_args
) -> int:
    try:
        check_arguments(args)  # before any AWS client exists
        outcome = _outcome(args, build, aws(args))
    except (ClientError, BotoCoreError, Pop3IngestError) as exc:
        outcome = render.Outcome("mailbox", {"action": args.action}, lambda: None, error=exc)
    return render.emit(outcome, as_json=args.json)
