"""Mode fleet: which schedule each mailbox secret should have, and what to change to get there.

Pure: names, rates, windows and the job a tick sends are worked out here from
what the secrets and the schedules say; :mod:`pop3_ingest.domain.reconcile`
reads and writes them through ports (docs/fleet.md).

A mailbox is a secret tagged ``MAILBOX_TAG_KEY=MAILBOX_TAG_VALUE``. Its schedule
sends the jobs queue ``{"secret_id": <name>, "scheduled_at": <tick time>}``
every ``interval_minutes`` (the secret's own, at most MAX_INTERVAL_MINUTES; 0 or
unset: DEFAULT_INTERVAL_MINUTES), in
the mailbox's own message group, so SQS hands out one job per mailbox at a time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pop3_ingest.config import DEFAULT_INTERVAL_MINUTES, MAX_INTERVAL_MINUTES, MailboxConfig
from pop3_ingest.errors import SecretError

# EventBridge Scheduler's rules for a schedule (its API reference).
SCHEDULE_NAME_LIMIT = 64
MAX_WINDOW_MINUTES = 1440
MIN_EVENT_AGE_SECONDS = 60
MAX_EVENT_AGE_SECONDS = 86400
DESCRIPTION_LIMIT = 512
# What the Scheduler puts in place of this text when a tick is sent: the
# tick's own time, so every tick is a different message (content-based
# deduplication keeps a retried send of one tick from doubling it).
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
# A tick the Scheduler could not deliver is retried this often, and never
# once the next tick is due (MaximumEventAgeInSeconds = the interval).
TICK_RETRIES = 5

_HASH_CHARS = 16  # 64 bits: no two of a million names collide in practice
_READABLE_CHARS = SCHEDULE_NAME_LIMIT - _HASH_CHARS - 1
_NOT_IN_A_NAME = re.compile(r"[^0-9A-Za-z_.-]")
# arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-<6 random characters>
_SECRET_ARN = re.compile(r"arn:[^:]+:secretsmanager:[^:]*:[^:]*:secret:(?P<name>.+)-[0-9A-Za-z]{6}")
# A schedule written this long after its secret last changed was written from
# that change: its value was read before the write, never that much before.
# Closer than that, its description (which records the change it was written
# from) decides.
REWRITE_MARGIN = timedelta(minutes=15)
_CHANGED = "secret last changed "


def schedule_name(secret_name: str) -> str:
    """A valid, stable schedule name: the secret's name made readable, then a digest of it.

    ``pop3/alice`` -> ``pop3_alice-<16 hex>``; the digest keeps names apart that
    read alike (``pop3/alice`` and ``pop3_alice``) or are cut at the same place.
    """
    digest = hashlib.sha256(secret_name.encode()).hexdigest()[:_HASH_CHARS]
    return f"{_NOT_IN_A_NAME.sub('_', secret_name)[:_READABLE_CHARS]}-{digest}"


def message_group_id(secret_name: str) -> str:
    """The mailbox's message group on the jobs queue: one job of it in flight at a time.

    Group ids allow 128 characters of a limited set; a digest fits any secret
    name and still gives every mailbox a group of its own.
    """
    return hashlib.sha256(secret_name.encode()).hexdigest()


def secret_name_of(secret_id: str) -> str:
    """The secret's name, whether ``secret_id`` is its name or its full ARN."""
    arn = _SECRET_ARN.fullmatch(secret_id)
    return arn.group("name") if arn else secret_id


def interval_of(secret_text: str) -> tuple[int, str | None]:
    """The minutes between a mailbox's runs, from its secret, and what is wrong with the secret.

    A secret the function would refuse still gets a schedule at the default
    interval: each of its runs then reports the problem where the operator looks
    (the run's log line and metrics), rather than the mailbox going silent.
    """
    try:
        config = MailboxConfig.from_secret(json.loads(secret_text))
    except ValueError:
        return DEFAULT_INTERVAL_MINUTES, "the secret is not JSON"
    except SecretError as exc:
        return DEFAULT_INTERVAL_MINUTES, str(exc)
    if config.interval_minutes > MAX_INTERVAL_MINUTES:
        return MAX_INTERVAL_MINUTES, (
            f"interval_minutes {config.interval_minutes} is above the fleet's longest interval: "
            f"scheduled every {MAX_INTERVAL_MINUTES} minutes"
        )
    return config.interval_minutes or DEFAULT_INTERVAL_MINUTES, None


@dataclass(frozen=True)
class MailboxSecret:
    """A secret as Secrets Manager lists it: no value, only what decides its schedule."""

    name: str
    changed: datetime | None = None  # LastChangedDate
    enabled: bool = True  # tagged as a mailbox and not deleted


@dataclass(frozen=True)
class ExistingSchedule:
    """A schedule as the Scheduler lists it (its summary holds no description or target)."""

    name: str
    modified: datetime | None = None  # LastModificationDate
    enabled: bool = True


@dataclass(frozen=True)
class MailboxSchedule:
    """The schedule a mailbox secret should have."""

    secret_name: str
    interval_minutes: int = DEFAULT_INTERVAL_MINUTES
    secret_changed: datetime | None = None
    enabled: bool = True

    @property
    def name(self) -> str:
        return schedule_name(self.secret_name)

    @property
    def group_id(self) -> str:
        return message_group_id(self.secret_name)

    @property
    def expression(self) -> str:
        minutes = max(1, self.interval_minutes)
        return f"rate({minutes} {'minute' if minutes == 1 else 'minutes'})"

    @property
    def window_minutes(self) -> int:
        """How far a tick may be moved to spread the load: half the interval.

        A mailbox still starts within one interval of becoming due.
        """
        return min(MAX_WINDOW_MINUTES, max(1, self.interval_minutes // 2))

    @property
    def max_event_age_seconds(self) -> int:
        """A tick not delivered by the time the next one is due is dropped, not retried."""
        seconds = self.interval_minutes * 60
        return min(MAX_EVENT_AGE_SECONDS, max(MIN_EVENT_AGE_SECONDS, seconds))

    @property
    def job(self) -> str:
        """What every tick sends the jobs queue (the fetch function's job)."""
        return json.dumps({"secret_id": self.secret_name, "scheduled_at": SCHEDULED_TIME})

    @property
    def description(self) -> str:
        """Which change of the secret the schedule was written from, then whose it is."""
        text = f"{_CHANGED}{_stamp(self.secret_changed)}; pop3-ingest mailbox {self.secret_name}"
        return text[:DESCRIPTION_LIMIT]


def written_from(description: str | None, secret: MailboxSecret) -> bool:
    """Whether a schedule's description says it was written from the secret as it is now."""
    if description is None or secret.changed is None:
        return False
    return description.startswith(f"{_CHANGED}{_stamp(secret.changed)};")


def _stamp(changed: datetime | None) -> str:
    return changed.isoformat() if changed else "unknown"


def schedule_for(
    secret: MailboxSecret, secret_text: str, *, enabled: bool
) -> tuple[MailboxSchedule, str | None]:
    """The schedule for a secret's value, and what is wrong with the value (if anything).

    ``enabled`` is the deployment's choice (ScheduleEnabled), not the secret's.
    """
    interval, problem = interval_of(secret_text)
    schedule = MailboxSchedule(
        secret.name, interval, secret_changed=secret.changed, enabled=enabled
    )
    return schedule, problem


@dataclass(frozen=True)
class SchedulePlan:
    """What a full reconcile changes: schedules to write (after reading their secret's
    value), schedules whose description decides, and schedules to delete; the rest
    are left as they are."""

    to_write: tuple[MailboxSecret, ...]
    to_check: tuple[MailboxSecret, ...]  # written about when the secret changed
    to_delete: tuple[str, ...]  # schedule names that no tagged secret wants
    unchanged: tuple[str, ...]  # secret names whose schedule is up to date
    existing: frozenset[str]  # schedule names that exist now

    def has_schedule(self, secret_name: str) -> bool:
        return schedule_name(secret_name) in self.existing


def plan_schedules(
    secrets: Iterable[MailboxSecret], schedules: Iterable[ExistingSchedule], *, enabled: bool
) -> SchedulePlan:
    """Compare the tagged secrets with the group's schedules.

    A secret's value (its ``interval_minutes``) is read only when its schedule
    is missing, is in the wrong state, or was written before the secret last
    changed; so a daily reconcile of an unchanged fleet reads none.
    """
    existing = {schedule.name: schedule for schedule in schedules}
    wanted = {schedule_name(s.name): s for s in secrets if s.enabled}
    sorted_into: dict[str, list[MailboxSecret]] = {"write": [], "check": [], "keep": []}
    for name, secret in sorted(wanted.items()):
        current = existing.get(name)
        if current is None or current.enabled != enabled:
            sorted_into["write"].append(secret)
        else:
            sorted_into[_freshness(secret, current)].append(secret)
    return SchedulePlan(
        to_write=tuple(sorted_into["write"]),
        to_check=tuple(sorted_into["check"]),
        to_delete=tuple(sorted(set(existing) - set(wanted))),
        unchanged=tuple(secret.name for secret in sorted_into["keep"]),
        existing=frozenset(existing),
    )


def _freshness(secret: MailboxSecret, schedule: ExistingSchedule) -> str:
    """ "keep" a schedule written well after the secret's last change, "write" one
    written before it, "check" (its description) one written about then."""
    if secret.changed is None or schedule.modified is None:
        return "write"  # cannot tell
    if secret.changed > schedule.modified:
        return "write"
    return "keep" if secret.changed < schedule.modified - REWRITE_MARGIN else "check"
