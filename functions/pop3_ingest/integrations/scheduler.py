"""Mode fleet: the mailboxes' schedules on EventBridge Scheduler, and the secrets behind them.

:class:`EventBridgeSchedules` is the :class:`~pop3_ingest.domain.reconcile.ScheduleBook`
of the stack's schedule group; :class:`TaggedSecrets` the
:class:`~pop3_ingest.domain.reconcile.SecretDirectory` of the secrets carrying
the mailbox tag. :func:`build_reconciler` wires both for the reconciler function
and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import FleetSettings
from pop3_ingest.domain.reconcile import (
    SECRETS_PER_READ,
    WORKERS,
    Change,
    Reconciler,
    SecretValues,
)
from pop3_ingest.domain.schedules import (
    TICK_RETRIES,
    ExistingSchedule,
    MailboxSchedule,
    MailboxSecret,
)
from pop3_ingest.errors import ScheduleError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# The most a ListSecrets or ListSchedules page holds.
PAGE_SIZE = 100
# Adaptive retries slow the client down when the Scheduler throttles a big
# first reconcile (its rate quotas are per second), instead of failing writes.
_CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=20,
    max_pool_connections=WORKERS,
)
_NOT_FOUND = "ResourceNotFoundException"
_Answer = TypeVar("_Answer")
_CONFLICT = "ConflictException"


class SchedulerApi(Protocol):
    """What is used of boto3's ``scheduler`` client (no type stubs are installed for it)."""

    def create_schedule(self, **request: Any) -> Any: ...
    def update_schedule(self, **request: Any) -> Any: ...
    def get_schedule(self, **request: Any) -> Any: ...
    def delete_schedule(self, **request: Any) -> Any: ...
    def get_paginator(self, operation_name: str) -> Any: ...


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unless_missing(what: str, call: Callable[[], _Answer]) -> _Answer | None:
    """``call()``'s answer; None when AWS says there is no such thing; any other
    failure as a ScheduleError saying what could not be done."""
    try:
        return call()
    except ClientError as exc:
        if _code(exc) == _NOT_FOUND:
            return None
        raise ScheduleError(f"cannot {what}: {exc}") from exc
    except BotoCoreError as exc:
        raise ScheduleError(f"cannot {what}: {exc}") from exc


class EventBridgeSchedules:
    """The schedules of one schedule group, each sending its mailbox's job to the jobs queue."""

    def __init__(self, client: SchedulerApi, settings: FleetSettings) -> None:
        self.client = client
        self.group = settings.schedule_group
        self.queue_arn = settings.jobs_queue_arn
        self.role_arn = settings.scheduler_role_arn

    def existing(self) -> Iterator[ExistingSchedule]:
        try:
            pages = self.client.get_paginator("list_schedules").paginate(
                GroupName=self.group, PaginationConfig={"PageSize": PAGE_SIZE}
            )
            for page in pages:
                for item in page.get("Schedules", []):
                    yield ExistingSchedule(
                        item["Name"], item.get("LastModificationDate"), item["State"] == "ENABLED"
                    )
        except (ClientError, BotoCoreError) as exc:
            raise ScheduleError(f"cannot list the schedules of group {self.group}: {exc}") from exc

    def request(self, schedule: MailboxSchedule) -> dict[str, Any]:
        """CreateSchedule's (and UpdateSchedule's) parameters for a mailbox's schedule."""
        return {
            "Name": schedule.name,
            "GroupName": self.group,
            "ScheduleExpression": schedule.expression,
            "FlexibleTimeWindow": {
                "Mode": "FLEXIBLE",
                "MaximumWindowInMinutes": schedule.window_minutes,
            },
            "Target": {
                "Arn": self.queue_arn,
                "RoleArn": self.role_arn,
                "Input": schedule.job,
                "SqsParameters": {"MessageGroupId": schedule.group_id},
                "RetryPolicy": {
                    "MaximumEventAgeInSeconds": schedule.max_event_age_seconds,
                    "MaximumRetryAttempts": TICK_RETRIES,
                },
            },
            "State": "ENABLED" if schedule.enabled else "DISABLED",
            "Description": schedule.description,
        }

    def write(self, schedule: MailboxSchedule, *, exists: bool | None) -> Change:
        wanted = self.request(schedule)
        if exists is None:
            current = self._current(schedule.name)
            if current is not None and _same(current, wanted):
                return Change.UNCHANGED
            exists = current is not None
        try:
            return self._put(wanted, exists)
        except (ClientError, BotoCoreError) as exc:
            raise ScheduleError(f"cannot write schedule {schedule.name}: {exc}") from exc

    def _put(self, wanted: dict[str, Any], exists: bool, *, again: bool = True) -> Change:
        """Update or create; if the other one was right after all (a concurrent
        reconcile, a stale listing), do that instead, once."""
        try:
            if exists:
                self.client.update_schedule(**wanted)
            else:
                self.client.create_schedule(**wanted)
        except ClientError as exc:
            if not again or _code(exc) not in (_NOT_FOUND, _CONFLICT):
                raise
            return self._put(wanted, not exists, again=False)
        return Change.UPDATED if exists else Change.CREATED

    def description(self, name: str) -> str | None:
        current = self._current(name)
        return None if current is None else str(current.get("Description", ""))

    def _current(self, name: str) -> dict[str, Any] | None:
        return _unless_missing(
            f"read schedule {name}",
            lambda: dict(self.client.get_schedule(Name=name, GroupName=self.group)),
        )

    def delete(self, name: str) -> Change:
        answer = _unless_missing(
            f"delete schedule {name}",
            lambda: dict(self.client.delete_schedule(Name=name, GroupName=self.group)),
        )
        return Change.ABSENT if answer is None else Change.DELETED


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the schedule as read already says everything ``wanted`` says."""
    for key, value in wanted.items():
        if key == "Target":
            target = current.get("Target", {})
            if any(target.get(k) != v for k, v in value.items()):
                return False
        elif current.get(key) != value:
            return False
    return True


class TaggedSecrets:
    """The account's secrets carrying the mailbox tag (names, dates and, in batches, values)."""

    def __init__(self, client: SecretsManagerClient, settings: FleetSettings) -> None:
        self.client = client
        self.tag = (settings.mailbox_tag_key, settings.mailbox_tag_value)

    def tagged(self) -> Iterator[MailboxSecret]:
        key, value = self.tag
        try:
            pages = self.client.get_paginator("list_secrets").paginate(
                Filters=[
                    {"Key": "tag-key", "Values": [key]},
                    {"Key": "tag-value", "Values": [value]},
                ],
                PaginationConfig={"PageSize": PAGE_SIZE},
            )
            for page in pages:
                for entry in page.get("SecretList", []):
                    secret = self._secret(entry)
                    # The two filters match independently; only the pair makes a mailbox.
                    if secret is not None and secret.enabled:
                        yield secret
        except (ClientError, BotoCoreError) as exc:
            raise ScheduleError(f"cannot list the mailbox secrets: {exc}") from exc

    def describe(self, secret_id: str) -> MailboxSecret | None:
        entry = _unless_missing(
            f"describe secret {secret_id!r}",
            lambda: dict(self.client.describe_secret(SecretId=secret_id)),
        )
        return None if entry is None else self._secret(entry)

    def _secret(self, entry: Mapping[str, Any]) -> MailboxSecret | None:
        if "Name" not in entry:
            return None
        tags = {tag.get("Key"): tag.get("Value") for tag in entry.get("Tags", [])}
        key, value = self.tag
        enabled = tags.get(key) == value and "DeletedDate" not in entry
        return MailboxSecret(entry["Name"], entry.get("LastChangedDate"), enabled)

    def read(self, names: Sequence[str]) -> SecretValues:
        if len(names) > SECRETS_PER_READ:
            raise ValueError(f"at most {SECRETS_PER_READ} secrets per read")
        try:
            response = self.client.batch_get_secret_value(SecretIdList=list(names))
        except (ClientError, BotoCoreError) as exc:
            raise ScheduleError(f"cannot read {len(names)} mailbox secret(s): {exc}") from exc
        values = {
            entry["Name"]: entry["SecretString"]
            for entry in response.get("SecretValues", [])
            if "Name" in entry and "SecretString" in entry
        }
        errors = {
            error.get("SecretId", ""): f"{error.get('ErrorCode')}: {error.get('Message')}"
            for error in response.get("Errors", [])
        }
        return SecretValues(values, errors)

    def enable(self, secret_id: str) -> None:
        """Tag the secret as a mailbox."""
        key, value = self.tag
        self.client.tag_resource(SecretId=secret_id, Tags=[{"Key": key, "Value": value}])

    def disable(self, secret_id: str) -> None:
        """Remove the mailbox tag from the secret."""
        self.client.untag_resource(SecretId=secret_id, TagKeys=[self.tag[0]])


@cache
def _clients() -> tuple[SecretsManagerClient, SchedulerApi]:
    """Created on first use, then reused across warm invocations."""
    session = boto3.session.Session()
    return (
        session.client("secretsmanager", config=_CLIENT_CONFIG),
        session.client("scheduler", config=_CLIENT_CONFIG),
    )


def build_reconciler(
    settings: FleetSettings, *, seconds_left: Callable[[], float] | None = None
) -> tuple[Reconciler, TaggedSecrets]:
    """The reconciler over real clients, and its secrets adapter (the CLI tags with it)."""
    secrets_client, scheduler_client = _clients()
    secrets = TaggedSecrets(secrets_client, settings)
    schedules = EventBridgeSchedules(scheduler_client, settings)
    reconciler = Reconciler(
        secrets, schedules, enabled=settings.schedules_enabled, seconds_left=seconds_left
    )
    return reconciler, secrets
