"""Mode fleet: keep one schedule per mailbox secret, through two small ports.

:class:`Reconciler` serves the reconciler function and the CLI's ``mailbox``
commands alike: one secret at a time (a tag added or removed, a secret created,
changed, deleted or restored), or every secret at once (daily, and after each
deploy). What each schedule should be is decided in
:mod:`pop3_ingest.domain.schedules`; the adapters are in
:mod:`pop3_ingest.integrations.scheduler`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import Protocol

from pop3_ingest.domain.schedules import (
    ExistingSchedule,
    MailboxSchedule,
    MailboxSecret,
    SchedulePlan,
    plan_schedules,
    schedule_for,
    schedule_name,
    secret_name_of,
    written_from,
)
from pop3_ingest.errors import ScheduleError

# Secrets read in one call (BatchGetSecretValue takes at most 20 ids).
SECRETS_PER_READ = 20
# Calls in flight at once in a full reconcile: the API round trips overlap,
# and the Scheduler's default rate quotas (1,000 per second) stay out of reach
# of the writes, not of the reads of a big first run.
WORKERS = 32
# A full reconcile starts no new batch when less than this is left of its
# time; what it did not reach is done by the next one (every write is idempotent).
MARGIN_SECONDS = 60.0
# Problems kept in a report, each one line (counts are always complete).
MAX_PROBLEMS = 50


class Change(StrEnum):
    """What happened to one mailbox's schedule."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"  # to be deleted, and already gone
    FAILED = "failed"
    SKIPPED = "skipped"  # not reached before the run's time ran out


@dataclass(frozen=True)
class SecretValues:
    """The values of a batch of secrets by name, and why the others could not be read."""

    values: dict[str, str]
    errors: dict[str, str]


class SecretDirectory(Protocol):
    """The mailbox secrets: listed by tag, described one at a time, read in batches."""

    def tagged(self) -> Iterable[MailboxSecret]: ...

    def describe(self, secret_id: str) -> MailboxSecret | None:
        """None when there is no such secret (any more)."""
        ...

    def read(self, names: Sequence[str]) -> SecretValues:
        """At most SECRETS_PER_READ names."""
        ...


class ScheduleBook(Protocol):
    """The schedules of the fleet's schedule group."""

    def existing(self) -> Iterable[ExistingSchedule]: ...

    def description(self, name: str) -> str | None:
        """None when there is no such schedule."""
        ...

    def write(self, schedule: MailboxSchedule, *, exists: bool | None) -> Change:
        """Create or update; ``exists=None``: look first, and leave an equal one alone."""
        ...

    def delete(self, name: str) -> Change:
        """DELETED, or ABSENT when there was none."""
        ...


@dataclass
class ReconcileReport:
    """What a reconcile did, by outcome, with one line per problem (bounded)."""

    mailboxes: int = 0
    changes: dict[Change, int] = field(default_factory=lambda: dict.fromkeys(Change, 0))
    failed: list[str] = field(default_factory=list)  # secret or schedule names
    problems: list[str] = field(default_factory=list)
    # Batches of a full reconcile note their problems from worker threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, change: Change, name: str) -> None:
        self.changes[change] += 1
        if change is Change.FAILED:
            self.failed.append(name)

    def note(self, name: str, problem: str) -> None:
        with self._lock:
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(f"{name}: {problem}")

    @property
    def complete(self) -> bool:
        return not self.changes[Change.FAILED] and not self.changes[Change.SKIPPED]

    def as_dict(self) -> dict[str, object]:
        return {
            "mailboxes": self.mailboxes,
            **{change.value: n for change, n in self.changes.items()},
            "failed_names": self.failed[:MAX_PROBLEMS],
            "problems": self.problems,
        }


@dataclass(frozen=True)
class Survey:
    """The tagged secrets and what a full reconcile would change."""

    secrets: tuple[MailboxSecret, ...]
    plan: SchedulePlan


@dataclass(frozen=True)
class Reconciler:
    """Brings the schedule group in step with the tagged secrets.

    ``enabled`` is the deployment's ScheduleEnabled: every schedule is written
    in that state. ``seconds_left`` bounds a full reconcile (None: no bound).
    """

    secrets: SecretDirectory
    schedules: ScheduleBook
    _: KW_ONLY
    enabled: bool = True
    seconds_left: Callable[[], float] | None = None
    workers: int = WORKERS

    # -- one secret -----------------------------------------------------------------

    def reconcile_secret(self, secret_id: str) -> ReconcileReport:
        """After an event about one secret: schedule it if it is a mailbox, else unschedule it."""
        secret = self.secrets.describe(secret_id)
        if secret is None or not secret.enabled:
            name = secret.name if secret is not None else secret_name_of(secret_id)
            return self._one(self.schedules.delete(schedule_name(name)), name)
        return self._schedule(secret)

    def schedule_secret(self, secret_id: str) -> ReconcileReport:
        """Give the secret its schedule now, whatever its tags say (``mailbox add``)."""
        secret = self.secrets.describe(secret_id)
        if secret is None:
            raise ScheduleError(f"no secret {secret_id!r}")
        return self._schedule(MailboxSecret(secret.name, secret.changed))

    def unschedule_secret(self, secret_id: str) -> ReconcileReport:
        """Delete the secret's schedule now (``mailbox remove``)."""
        secret = self.secrets.describe(secret_id)
        name = secret.name if secret is not None else secret_name_of(secret_id)
        return self._one(self.schedules.delete(schedule_name(name)), name)

    def _schedule(self, secret: MailboxSecret) -> ReconcileReport:
        report = ReconcileReport(mailboxes=1)
        for change, name in self._write_batch((secret,), report, lambda _: None):
            report.add(change, name)
        return report

    @staticmethod
    def _one(change: Change, name: str) -> ReconcileReport:
        report = ReconcileReport(mailboxes=0)
        report.add(change, name)
        return report

    # -- every secret ---------------------------------------------------------------

    def survey(self) -> Survey:
        """List the tagged secrets and the schedules (at the same time) and compare them."""
        with ThreadPoolExecutor(2) as pool:
            secrets = pool.submit(lambda: tuple(self.secrets.tagged()))
            schedules = pool.submit(lambda: tuple(self.schedules.existing()))
            listed = secrets.result()
            plan = plan_schedules(listed, schedules.result(), enabled=self.enabled)
        return Survey(listed, plan)

    def reconcile_all(self) -> ReconcileReport:
        """Create, rewrite and delete schedules until the group matches the tagged secrets."""
        survey = self.survey()
        plan = survey.plan
        report = ReconcileReport(mailboxes=len(survey.secrets))
        report.changes[Change.UNCHANGED] = len(plan.unchanged)
        with ThreadPoolExecutor(self.workers) as pool:
            deletions = [pool.submit(self._delete, name, report) for name in plan.to_delete]
            writes = [
                pool.submit(self._write_batch, batch, report, plan.has_schedule)
                for batch in _batches(plan.to_write, SECRETS_PER_READ)
            ] + [
                pool.submit(self._check_batch, batch, report)
                for batch in _batches(plan.to_check, SECRETS_PER_READ)
            ]
            for done in deletions:
                report.add(*done.result())
            for batch in writes:
                for change, name in batch.result():
                    report.add(change, name)
        return report

    def _delete(self, name: str, report: ReconcileReport) -> tuple[Change, str]:
        if self._out_of_time():
            return Change.SKIPPED, name
        try:
            return self.schedules.delete(name), name
        except ScheduleError as exc:
            report.note(name, str(exc))
            return Change.FAILED, name

    def _check_batch(
        self, batch: Sequence[MailboxSecret], report: ReconcileReport
    ) -> list[tuple[Change, str]]:
        """Leave alone the schedules whose description says they hold the secret's
        last change; read and rewrite the others."""
        if self._out_of_time():
            return [(Change.SKIPPED, secret.name) for secret in batch]
        stale = [secret for secret in batch if not self._holds_last_change(secret)]
        kept = [(Change.UNCHANGED, s.name) for s in batch if s not in stale]
        return kept + (self._write_batch(stale, report, lambda _: True) if stale else [])

    def _holds_last_change(self, secret: MailboxSecret) -> bool:
        try:
            return written_from(self.schedules.description(schedule_name(secret.name)), secret)
        except ScheduleError:
            return False  # written again: a failure there is reported

    def _write_batch(
        self,
        batch: Sequence[MailboxSecret],
        report: ReconcileReport,
        exists: Callable[[str], bool | None],
    ) -> list[tuple[Change, str]]:
        """Read a batch of secrets in one call, then write each one's schedule.

        ``exists`` tells whether a secret's schedule exists (None: not known).
        """
        names = [secret.name for secret in batch]
        if self._out_of_time():
            return [(Change.SKIPPED, name) for name in names]
        try:
            read = self.secrets.read(names)
        except ScheduleError as exc:
            report.note(names[0], str(exc))
            return [(Change.FAILED, name) for name in names]
        return [
            (self._write_one(secret, read, report, exists=exists(secret.name)), secret.name)
            for secret in batch
        ]

    def _write_one(
        self,
        secret: MailboxSecret,
        read: SecretValues,
        report: ReconcileReport,
        *,
        exists: bool | None,
    ) -> Change:
        if secret.name not in read.values:
            report.note(secret.name, read.errors.get(secret.name, "not returned"))
            return Change.FAILED
        schedule, problem = schedule_for(secret, read.values[secret.name], enabled=self.enabled)
        if problem is not None:
            report.note(secret.name, f"scheduled every {schedule.interval_minutes} min: {problem}")
        try:
            return self.schedules.write(schedule, exists=exists)
        except ScheduleError as exc:
            report.note(secret.name, str(exc))
            return Change.FAILED

    def _out_of_time(self) -> bool:
        return self.seconds_left is not None and self.seconds_left() < MARGIN_SECONDS


def _batches(items: Sequence[MailboxSecret], size: int) -> Iterator[Sequence[MailboxSecret]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
