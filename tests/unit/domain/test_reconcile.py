"""The reconciler over in-memory secrets and schedules: one secret, and the whole fleet."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from pop3_ingest.config import DEFAULT_INTERVAL_MINUTES
from pop3_ingest.domain.reconcile import (
    SECRETS_PER_READ,
    Change,
    Reconciler,
    SecretValues,
)
from pop3_ingest.domain.schedules import (
    ExistingSchedule,
    MailboxSchedule,
    MailboxSecret,
    schedule_name,
    secret_name_of,
)
from pop3_ingest.errors import ScheduleError

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def value(interval: int = 0, **fields: object) -> str:
    return json.dumps(
        {"host": "pop.example.com", "username": "u", "password": "p", "interval_minutes": interval}
        | fields
    )


@dataclass
class FakeSecrets:
    """Secrets by name: (value, last changed, tagged); counts the reads."""

    secrets: dict[str, tuple[str, datetime, bool]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    reads: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, name: str, text: str, *, tagged: bool = True, at: datetime = T0) -> None:
        self.secrets[name] = (text, at, tagged)

    def tagged(self) -> Iterator[MailboxSecret]:
        for name, (_, changed, tagged) in sorted(self.secrets.items()):
            if tagged:
                yield MailboxSecret(name, changed)

    def describe(self, secret_id: str) -> MailboxSecret | None:
        name = secret_name_of(secret_id)
        if name not in self.secrets:
            return None
        _, changed, tagged = self.secrets[name]
        return MailboxSecret(name, changed, tagged)

    def read(self, names: Sequence[str]) -> SecretValues:
        assert len(names) <= SECRETS_PER_READ
        with self.lock:
            self.reads.append(list(names))
        values = {n: self.secrets[n][0] for n in names if n not in self.unreadable}
        errors = {n: "AccessDeniedException: no" for n in names if n in self.unreadable}
        return SecretValues(values, errors)


@dataclass
class FakeSchedules:
    """Schedules by name, stamped with a clock; counts the writes."""

    now: datetime = T0 + timedelta(days=1)
    schedules: dict[str, tuple[MailboxSchedule, datetime]] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def existing(self) -> Iterator[ExistingSchedule]:
        for name, (schedule, modified) in sorted(self.schedules.items()):
            yield ExistingSchedule(name, modified, schedule.enabled)

    def write(self, schedule: MailboxSchedule, *, exists: bool | None) -> Change:
        if schedule.secret_name in self.failing:
            raise ScheduleError("throttled")
        with self.lock:
            current = self.schedules.get(schedule.name)
            if exists is None and current is not None and current[0] == schedule:
                return Change.UNCHANGED
            self.schedules[schedule.name] = (schedule, self.now)
            self.writes.append(schedule.secret_name)
        return Change.UPDATED if current is not None else Change.CREATED

    def description(self, name: str) -> str | None:
        current = self.schedules.get(name)
        return None if current is None else current[0].description

    def delete(self, name: str) -> Change:
        with self.lock:
            return Change.DELETED if self.schedules.pop(name, None) else Change.ABSENT

    def of(self, secret: str) -> MailboxSchedule:
        return self.schedules[schedule_name(secret)][0]


@pytest.fixture
def secrets() -> FakeSecrets:
    return FakeSecrets()


@pytest.fixture
def book() -> FakeSchedules:
    return FakeSchedules()


def reconciler(secrets: FakeSecrets, book: FakeSchedules, **options: object) -> Reconciler:
    return Reconciler(secrets, book, **options)  # type: ignore[arg-type]


# -- one secret (events, the CLI) ------------------------------------------------------------


def test_a_tagged_secret_gets_its_schedule_and_a_repeat_changes_nothing(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    secrets.put("pop3/alice", value(10))
    first = reconciler(secrets, book).reconcile_secret("pop3/alice")
    assert first.changes[Change.CREATED] == 1
    assert first.complete
    assert book.of("pop3/alice") == MailboxSchedule("pop3/alice", 10, secret_changed=T0)

    again = reconciler(secrets, book).reconcile_secret("pop3/alice")
    assert again.changes[Change.UNCHANGED] == 1
    assert book.writes == ["pop3/alice"]


def test_a_changed_interval_rewrites_the_schedule(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    secrets.put("pop3/alice", value(10))
    reconciler(secrets, book).reconcile_secret("pop3/alice")
    secrets.put("pop3/alice", value(30), at=T0 + timedelta(hours=1))
    report = reconciler(secrets, book).reconcile_secret("pop3/alice")
    assert report.changes[Change.UPDATED] == 1
    assert book.of("pop3/alice").expression == "rate(30 minutes)"


@pytest.mark.parametrize("how", ["untagged", "deleted", "deleted, named by its ARN"])
def test_a_secret_that_is_no_longer_a_mailbox_loses_its_schedule(
    secrets: FakeSecrets, book: FakeSchedules, how: str
) -> None:
    secrets.put("pop3/alice", value())
    reconciler(secrets, book).reconcile_secret("pop3/alice")
    secret_id = "pop3/alice"
    if how == "untagged":
        secrets.put("pop3/alice", value(), tagged=False)
    else:
        del secrets.secrets["pop3/alice"]
        if "ARN" in how:
            secret_id = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pop3/alice-Ab12Cd"
    report = reconciler(secrets, book).reconcile_secret(secret_id)
    assert report.changes[Change.DELETED] == 1
    assert book.schedules == {}
    # Nothing left to delete the second time, and that is no failure.
    assert reconciler(secrets, book).reconcile_secret(secret_id).changes[Change.ABSENT] == 1


def test_adding_by_hand_schedules_whatever_the_tags_say_and_needs_the_secret(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    secrets.put("pop3/alice", value(), tagged=False)
    assert reconciler(secrets, book).schedule_secret("pop3/alice").changes[Change.CREATED] == 1
    with pytest.raises(ScheduleError, match="no secret"):
        reconciler(secrets, book).schedule_secret("pop3/nobody")
    assert reconciler(secrets, book).unschedule_secret("pop3/nobody").changes[Change.ABSENT] == 1


def test_a_secret_the_function_refuses_is_scheduled_at_the_default_and_noted(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    secrets.put("pop3/broken", value(password=""))
    report = reconciler(secrets, book).reconcile_secret("pop3/broken")
    assert report.changes[Change.CREATED] == 1
    assert book.of("pop3/broken").interval_minutes == DEFAULT_INTERVAL_MINUTES
    (problem,) = report.problems
    assert problem.startswith("pop3/broken: ")
    assert "password" in problem


def test_an_unreadable_secret_keeps_its_schedule_and_fails_the_run(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    secrets.put("pop3/alice", value(10))
    reconciler(secrets, book).reconcile_secret("pop3/alice")
    secrets.put("pop3/alice", value(30), at=T0 + timedelta(hours=1))
    secrets.unreadable.add("pop3/alice")
    report = reconciler(secrets, book).reconcile_secret("pop3/alice")
    assert not report.complete
    assert report.failed == ["pop3/alice"]
    assert "AccessDenied" in report.problems[0]
    assert book.of("pop3/alice").interval_minutes == 10, "not guessed over"


# -- the whole fleet ---------------------------------------------------------------------


def fleet(secrets: FakeSecrets, count: int) -> list[str]:
    names = [f"pop3/user{n:04d}" for n in range(count)]
    for n, name in enumerate(names):
        secrets.put(name, value(1 + n % 60))
    return names


def test_a_first_reconcile_schedules_every_mailbox_in_batched_reads(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    names = fleet(secrets, 95)
    secrets.put("pop3/paused", value(), tagged=False)
    report = reconciler(secrets, book, workers=4).reconcile_all()
    assert report.complete
    assert report.mailboxes == 95
    assert report.changes[Change.CREATED] == 95
    assert sorted(s.secret_name for s, _ in book.schedules.values()) == names
    assert all(len(batch) <= SECRETS_PER_READ for batch in secrets.reads)
    assert len(secrets.reads) == -(-95 // SECRETS_PER_READ)
    assert book.of("pop3/user0007").interval_minutes == 8


def test_a_reconcile_of_an_unchanged_fleet_reads_and_writes_nothing(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    fleet(secrets, 50)
    reconciler(secrets, book).reconcile_all()
    secrets.reads.clear()
    book.writes.clear()
    report = reconciler(secrets, book).reconcile_all()
    assert report.changes[Change.UNCHANGED] == 50
    assert secrets.reads == []
    assert book.writes == []


def test_a_reconcile_follows_added_removed_and_changed_mailboxes(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    fleet(secrets, 5)
    reconciler(secrets, book).reconcile_all()
    book.now += timedelta(days=1)
    secrets.put("pop3/new", value(7))
    secrets.put("pop3/user0001", value(), tagged=False)
    del secrets.secrets["pop3/user0002"]
    secrets.put("pop3/user0003", value(45), at=book.now)
    secrets.reads.clear()

    report = reconciler(secrets, book).reconcile_all()
    assert report.changes[Change.CREATED] == 1
    assert report.changes[Change.DELETED] == 2
    assert report.changes[Change.UPDATED] == 1
    assert report.changes[Change.UNCHANGED] == 2
    assert sorted(n for batch in secrets.reads for n in batch) == ["pop3/new", "pop3/user0003"]
    assert book.of("pop3/user0003").expression == "rate(45 minutes)"
    assert schedule_name("pop3/user0001") not in book.schedules
    assert schedule_name("pop3/user0002") not in book.schedules


def test_a_schedule_written_just_after_its_secret_changed_is_checked_by_its_description(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    # Written a minute after the change: within the margin, so not trusted by date alone.
    book.now = T0 + timedelta(minutes=1)
    fleet(secrets, 3)
    reconciler(secrets, book).reconcile_all()
    secrets.reads.clear()
    book.writes.clear()

    report = reconciler(secrets, book).reconcile_all()
    assert report.changes[Change.UNCHANGED] == 3
    assert secrets.reads == [], "the descriptions hold the secrets' last change"

    # A change landing within a second of the write is caught the same way.
    secrets.put("pop3/user0001", value(33), at=T0 + timedelta(seconds=30))
    report = reconciler(secrets, book).reconcile_all()
    assert (report.changes[Change.UNCHANGED], report.changes[Change.UPDATED]) == (2, 1)
    assert book.of("pop3/user0001").expression == "rate(33 minutes)"


def test_disabling_the_deployment_disables_every_schedule(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    fleet(secrets, 3)
    reconciler(secrets, book).reconcile_all()
    reconciler(secrets, book, enabled=False).reconcile_all()
    assert not any(s.enabled for s, _ in book.schedules.values())


def test_failures_are_the_mailboxes_own_and_fail_the_run(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    names = fleet(secrets, 30)
    book.failing.add(names[3])
    secrets.unreadable.add(names[25])
    report = reconciler(secrets, book).reconcile_all()
    assert sorted(report.failed) == sorted([names[3], names[25]])
    assert report.changes[Change.CREATED] == 28
    assert not report.complete


def test_a_run_out_of_time_starts_nothing_new_and_says_so(
    secrets: FakeSecrets, book: FakeSchedules
) -> None:
    fleet(secrets, 40)
    report = reconciler(secrets, book, seconds_left=lambda: 5.0).reconcile_all()
    assert report.changes[Change.SKIPPED] == 40
    assert book.writes == []
    assert not report.complete


def test_a_listing_that_fails_fails_the_whole_reconcile(
    secrets: FakeSecrets, book: FakeSchedules, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Iterator[MailboxSecret]:
        raise ScheduleError("cannot list the mailbox secrets: throttled")

    monkeypatch.setattr(secrets, "tagged", broken)
    with pytest.raises(ScheduleError, match="cannot list"):
        reconciler(secrets, book).reconcile_all()


def test_the_report_is_bounded_and_serialisable(secrets: FakeSecrets, book: FakeSchedules) -> None:
    for n in range(80):
        secrets.put(f"pop3/broken{n:02d}", "not json")
    report = reconciler(secrets, book).reconcile_all()
    document = report.as_dict()
    assert json.loads(json.dumps(document)) == document
    assert document["created"] == 80
    assert len(document["problems"]) == 50  # type: ignore[arg-type]
