"""Which schedule a mailbox secret gets, and what a full reconcile changes (pure)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from pop3_ingest.config import DEFAULT_INTERVAL_MINUTES, MAX_INTERVAL_MINUTES
from pop3_ingest.domain.schedules import (
    DESCRIPTION_LIMIT,
    MAX_EVENT_AGE_SECONDS,
    MAX_WINDOW_MINUTES,
    SCHEDULE_NAME_LIMIT,
    SCHEDULED_TIME,
    ExistingSchedule,
    MailboxSchedule,
    MailboxSecret,
    interval_of,
    message_group_id,
    plan_schedules,
    schedule_for,
    schedule_name,
    secret_name_of,
    written_from,
)

# EventBridge Scheduler's rule for a schedule name; SQS's for a message group id.
SCHEDULE_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
GROUP_ID = re.compile(r"[0-9A-Za-z!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")
# Every character Secrets Manager allows in a secret's name.
SECRET_NAME_CHARS = "abcXYZ019/_+=.@-"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def secret_text(**fields: object) -> str:
    base: dict[str, object] = {"host": "pop.example.com", "username": "u", "password": "p"}
    return json.dumps({**base, **fields})


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["pop3/alice", "a", SECRET_NAME_CHARS, "x" * 512, "tenant-42/mailboxes/support@acme.example"],
)
def test_a_schedule_name_is_valid_stable_and_readable(secret: str) -> None:
    name = schedule_name(secret)
    assert SCHEDULE_NAME.fullmatch(name)
    assert len(name) <= SCHEDULE_NAME_LIMIT
    assert schedule_name(secret) == name
    # The operator recognises the mailbox in the console.
    assert name.startswith(re.sub(r"[^0-9A-Za-z_.-]", "_", secret)[:20])


def test_secrets_that_read_alike_get_schedules_of_their_own() -> None:
    look_alikes = ["pop3/alice", "pop3_alice", "pop3+alice", "x" * 100 + "1", "x" * 100 + "2"]
    assert len({schedule_name(s) for s in look_alikes}) == len(look_alikes)


def test_each_mailbox_has_its_own_valid_message_group() -> None:
    groups = {message_group_id(s) for s in ("pop3/alice", "pop3/bob", "x" * 512)}
    assert len(groups) == 3
    assert all(GROUP_ID.fullmatch(g) for g in groups)
    assert message_group_id("pop3/alice") == message_group_id("pop3/alice")


def test_a_secret_arn_names_the_same_secret_as_its_name() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pop3/alice-AbC123"
    assert secret_name_of(arn) == "pop3/alice"
    assert secret_name_of("pop3/alice") == "pop3/alice"
    assert schedule_name(secret_name_of(arn)) == schedule_name("pop3/alice")


# -- the interval, the rate and the window --------------------------------------------------


def test_the_interval_is_the_secrets_own_or_the_default() -> None:
    assert interval_of(secret_text(interval_minutes=10)) == (10, None)
    assert interval_of(secret_text(interval_minutes=MAX_INTERVAL_MINUTES)) == (
        MAX_INTERVAL_MINUTES,
        None,
    )
    assert interval_of(secret_text()) == (DEFAULT_INTERVAL_MINUTES, None)
    assert interval_of(secret_text(interval_minutes=0)) == (DEFAULT_INTERVAL_MINUTES, None)


def test_a_longer_interval_than_a_fleet_keeps_is_shortened_and_noted() -> None:
    # A job older than the longest interval is dropped as stale by the fetch function.
    interval, problem = interval_of(secret_text(interval_minutes=MAX_INTERVAL_MINUTES * 2))
    assert interval == MAX_INTERVAL_MINUTES
    assert problem is not None
    assert "interval_minutes" in problem


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps(["a", "list"]),
        secret_text(interval_minutes="often"),
        secret_text(password=""),
    ],
)
def test_a_secret_the_function_refuses_is_still_scheduled_at_the_default(text: str) -> None:
    interval, problem = interval_of(text)
    assert interval == DEFAULT_INTERVAL_MINUTES
    assert problem
    # The problem names what is wrong, never a value.
    assert "often" not in problem


def test_a_problem_never_shows_the_secrets_values() -> None:
    _, problem = interval_of(secret_text(password="hunter2\nsecret", interval_minutes="often"))
    assert problem is not None
    assert "hunter2" not in problem


@pytest.mark.parametrize(
    ("minutes", "expression"),
    [(1, "rate(1 minute)"), (5, "rate(5 minutes)"), (60, "rate(60 minutes)")],
)
def test_the_rate_is_the_interval(minutes: int, expression: str) -> None:
    assert MailboxSchedule("pop3/a", minutes).expression == expression


@pytest.mark.parametrize("minutes", [1, 2, 5, 7, 15, 60])
def test_the_window_spreads_ticks_but_a_mailbox_starts_within_one_interval(minutes: int) -> None:
    schedule = MailboxSchedule("pop3/a", minutes)
    assert 1 <= schedule.window_minutes <= MAX_WINDOW_MINUTES
    # A tick may come at most the window late: due again before the next one.
    assert schedule.window_minutes < minutes or minutes == 1
    if minutes >= 2:
        assert schedule.window_minutes <= minutes // 2


@pytest.mark.parametrize("minutes", [1, 5, 60])
def test_an_undelivered_tick_is_not_retried_past_the_next_one(minutes: int) -> None:
    age = MailboxSchedule("pop3/a", minutes).max_event_age_seconds
    assert 60 <= age <= MAX_EVENT_AGE_SECONDS
    assert age <= max(60, minutes * 60)


def test_every_tick_sends_a_job_naming_the_secret_and_its_own_time() -> None:
    job = json.loads(MailboxSchedule("pop3/alice").job)
    assert job == {"secret_id": "pop3/alice", "scheduled_at": SCHEDULED_TIME}


def test_the_description_records_when_the_secret_changed() -> None:
    schedule = MailboxSchedule("pop3/alice", secret_changed=NOW)
    assert "pop3/alice" in schedule.description
    assert NOW.isoformat() in schedule.description
    assert len(MailboxSchedule("x" * 512, secret_changed=NOW).description) <= DESCRIPTION_LIMIT


def test_the_schedule_of_a_secret_follows_its_value_and_the_deployments_switch() -> None:
    secret = MailboxSecret("pop3/alice", NOW)
    schedule, problem = schedule_for(secret, secret_text(interval_minutes=15), enabled=False)
    assert problem is None
    assert schedule == MailboxSchedule("pop3/alice", 15, secret_changed=NOW, enabled=False)


# -- the plan --------------------------------------------------------------------------------


def listed(name: str, *, ago: timedelta = timedelta(days=3)) -> MailboxSecret:
    return MailboxSecret(name, NOW - ago)


def written(
    secret: str, *, ago: timedelta = timedelta(days=1), enabled: bool = True
) -> ExistingSchedule:
    return ExistingSchedule(schedule_name(secret), NOW - ago, enabled)


def test_a_new_mailbox_is_read_and_scheduled() -> None:
    plan = plan_schedules([listed("pop3/new")], [], enabled=True)
    assert [s.name for s in plan.to_write] == ["pop3/new"]
    assert not plan.has_schedule("pop3/new")
    assert plan.to_delete == ()


def test_an_unchanged_fleet_reads_no_secret() -> None:
    names = [f"pop3/user{n}" for n in range(100)]
    plan = plan_schedules([listed(n) for n in names], [written(n) for n in names], enabled=True)
    assert plan.to_write == plan.to_check == plan.to_delete == ()
    assert sorted(plan.unchanged) == sorted(names)


def test_a_secret_changed_after_its_schedule_was_written_is_read_again() -> None:
    plan = plan_schedules(
        [listed("pop3/changed", ago=timedelta(hours=1)), listed("pop3/same")],
        [written("pop3/changed", ago=timedelta(days=1)), written("pop3/same")],
        enabled=True,
    )
    assert [s.name for s in plan.to_write] == ["pop3/changed"]
    assert plan.has_schedule("pop3/changed")
    assert plan.unchanged == ("pop3/same",)


def test_a_schedule_written_about_when_its_secret_changed_is_checked_not_read() -> None:
    # Its value may have been read a moment before the change landed: the
    # description, which records the change it was written from, decides.
    plan = plan_schedules(
        [listed("pop3/a", ago=timedelta(minutes=10))],
        [written("pop3/a", ago=timedelta(minutes=9))],
        enabled=True,
    )
    assert [s.name for s in plan.to_check] == ["pop3/a"]
    assert plan.to_write == ()


def test_a_description_tells_which_change_of_the_secret_a_schedule_holds() -> None:
    secret = MailboxSecret("pop3/a", NOW)
    description = MailboxSchedule("pop3/a", secret_changed=NOW).description
    assert written_from(description, secret)
    assert not written_from(description, MailboxSecret("pop3/a", NOW + timedelta(seconds=1)))
    older = MailboxSchedule("pop3/a", secret_changed=NOW - timedelta(days=1)).description
    assert not written_from(older, secret)
    assert not written_from(None, secret)
    assert not written_from(description, MailboxSecret("pop3/a", None))
    # Even a name cut at the description's limit keeps the record.
    long = MailboxSecret("x" * 512, NOW)
    assert written_from(MailboxSchedule(long.name, secret_changed=NOW).description, long)


def test_a_schedule_without_a_tagged_secret_is_deleted() -> None:
    plan = plan_schedules(
        [listed("pop3/kept")], [written("pop3/kept"), written("pop3/gone")], enabled=True
    )
    assert plan.to_delete == (schedule_name("pop3/gone"),)
    assert plan.unchanged == ("pop3/kept",)


def test_a_secret_no_longer_enabled_loses_its_schedule() -> None:
    plan = plan_schedules(
        [MailboxSecret("pop3/off", NOW, enabled=False)], [written("pop3/off")], enabled=True
    )
    assert plan.to_delete == (schedule_name("pop3/off"),)
    assert plan.to_write == ()


@pytest.mark.parametrize("enabled", [True, False])
def test_switching_the_deployment_rewrites_every_schedule_in_the_other_state(enabled: bool) -> None:
    names = ["pop3/a", "pop3/b"]
    plan = plan_schedules(
        [listed(n) for n in names],
        [written(n, enabled=not enabled) for n in names],
        enabled=enabled,
    )
    assert sorted(s.name for s in plan.to_write) == names


def test_unknown_dates_are_written_again_rather_than_trusted() -> None:
    plan = plan_schedules(
        [MailboxSecret("pop3/a", None)], [ExistingSchedule(schedule_name("pop3/a"))], enabled=True
    )
    assert [s.name for s in plan.to_write] == ["pop3/a"]
