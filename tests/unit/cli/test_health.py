"""What ``status`` calls healthy: the rules in pop3_ingest_cli.health, from a state and a clock."""

from __future__ import annotations

import pytest

from pop3_ingest.domain.state import REWRITE_AFTER_SECONDS, Failure, MailboxState
from pop3_ingest_cli import health
from pop3_ingest_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY
from pop3_ingest_cli.states import Directory, StoredState, TaggedMailbox
from pop3_ingest_cli.status import StatusReport, assess

NOW = 2_000_000_000.0
HOUR = 3600.0
RULES = health.Rules(NOW, health.stale_limit(3, fleet=False))
DIGEST = "a" * 40


def healthy_state(**changes: object) -> MailboxState:
    state = MailboxState(last_completed=NOW - 600, last_attempt=NOW - 600)
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_a_mailbox_that_completed_recently_is_ok() -> None:
    row = health.judge("support", healthy_state(), RULES)
    assert row.health == health.OK
    assert row.problems == []
    assert row.facts["last_completed"] == health.iso(NOW - 600)
    assert row.facts["suspended"] is False
    assert row.facts["backing_off"] is False
    assert row.facts["quarantined"] == 0


def test_suspended_logins_are_unhealthy_and_point_at_resume() -> None:
    row = health.judge("support", healthy_state(auth_failures=3, auth_fingerprint="ab"), RULES)
    assert row.health == health.UNHEALTHY
    assert row.facts["suspended"] is True
    assert "pop3-ingest resume --mailbox support" in row.problems[0]


def test_fewer_failures_than_the_limit_are_not_a_suspension() -> None:
    row = health.judge("support", healthy_state(auth_failures=2, auth_fingerprint="ab"), RULES)
    assert row.health == health.OK
    assert row.facts["auth_failures"] == 2


def test_a_suspension_of_a_secret_changed_since_is_over() -> None:
    state = healthy_state(auth_failures=3, auth_fingerprint="ab")
    row = health.judge("support", state, RULES, fingerprint="cd")
    assert row.health == health.OK
    assert row.facts["suspended"] is False
    assert "secret changed" in row.notes[0]
    same = health.judge("support", state, RULES, fingerprint="ab")
    assert same.facts["suspended"] is True


@pytest.mark.parametrize(
    ("streaks", "reason", "expected"),
    [
        ({"busy_streak": 2}, "busy", health.UNHEALTHY),
        ({"unreachable_streak": 3}, "unreachable", health.UNHEALTHY),
        ({}, "login delay", health.OK),  # the server's own pace: normal
    ],
)
def test_backing_off(streaks: dict[str, int], reason: str, expected: str) -> None:
    row = health.judge("support", healthy_state(backoff_until=NOW + 300, **streaks), RULES)
    assert row.health == expected
    assert row.facts["backing_off"] is True
    assert row.facts["backoff_reason"] == reason
    assert row.facts["backoff_until"] == health.iso(NOW + 300)


def test_a_back_off_that_has_passed_is_nothing() -> None:
    row = health.judge("support", healthy_state(backoff_until=NOW - 1, busy_streak=4), RULES)
    assert row.health == health.OK
    assert row.facts["backing_off"] is False
    assert row.facts["backoff_until"] is None


def test_stale_and_never_completed() -> None:
    stale = health.judge("support", healthy_state(last_completed=NOW - 4 * HOUR), RULES)
    assert stale.health == health.UNHEALTHY
    assert "stale: last completed run 4 h 0 min ago (limit 3 h 0 min)" in stale.problems
    never = health.judge("support", MailboxState(last_attempt=NOW - 60), RULES)
    assert never.problems == ["no run has completed yet"]


def test_mode_fleet_allows_for_states_rewritten_only_twice_a_day() -> None:
    # Mode fleet saves an unchanged state every REWRITE_AFTER_SECONDS only.
    state = healthy_state(last_completed=NOW - 5 * HOUR)
    fleet = health.Rules(NOW, health.stale_limit(3, fleet=True))
    assert health.stale_limit(3, fleet=True) == 3 * HOUR + REWRITE_AFTER_SECONDS
    assert health.judge("support", state, fleet).health == health.OK
    assert health.judge("support", state, RULES).health == health.UNHEALTHY


def test_quarantined_messages_are_unhealthy() -> None:
    state = healthy_state(quarantined={DIGEST: Failure(3, "boom", NOW - 99, NOW - 9)})
    row = health.judge("support", state, RULES)
    assert row.health == health.UNHEALTHY
    assert row.facts["quarantined"] == 1
    assert "quarantine list --mailbox support" in row.problems[0]


def test_last_error_and_pending_are_shown_when_the_state_has_them() -> None:
    nothing = health.judge("support", healthy_state(), RULES)
    assert nothing.facts["last_error"] is None
    assert nothing.facts["last_error_at"] is None
    assert not nothing.facts["pending"]
    # Fields of newer states (version 5): read with defaults, so older ones work too.
    state = healthy_state(last_error="ConnectError: refused", last_error_at=NOW - 30, pending=12)
    row = health.judge("support", state, RULES)
    assert row.facts["last_error"] == "ConnectError: refused"
    assert row.facts["last_error_at"] == health.iso(NOW - 30)
    assert row.facts["pending"] == 12
    assert row.health == health.OK, "information, not a problem of its own"


def test_a_run_holding_the_lease_is_noted() -> None:
    row = health.judge("support", healthy_state(lease_owner="req-1", lease_until=NOW + 60), RULES)
    assert row.facts["running"] is True
    assert row.health == health.OK


def report(*rows: health.MailboxHealth) -> StatusReport:
    return StatusReport("b", "mail/", "single", 3, None, list(rows))


def test_exit_codes_unhealthy_first_then_unreadable() -> None:
    ok = health.judge("a", healthy_state(), RULES)
    sick = health.judge("b", healthy_state(auth_failures=5), RULES)
    lost = health.unreadable("c", "AccessDenied")
    assert report(ok).code == EXIT_OK
    assert report(ok, lost).code == EXIT_FAILED
    assert report(ok, lost, sick).code == EXIT_UNHEALTHY
    document = report(ok, lost, sick).document()
    assert (document["healthy"], document["unhealthy"], document["unreadable"]) == (1, 1, 1)


def test_mode_fleet_rows_join_state_and_tagged_secret() -> None:
    directory = Directory({"alice": TaggedMailbox("pop3/alice", "ff")}, {"pop3/bad": "why"})
    stored = StoredState("alice", healthy_state(auth_failures=3, auth_fingerprint="ee"), '"e1"')
    row = assess("alice", stored, RULES, directory)
    assert row.secret == "pop3/alice"
    assert row.health == health.OK, "suspended with another secret than the one tagged now"
    never = assess(
        "bob", StoredState("bob", None), RULES, Directory({"bob": TaggedMailbox("s", "f")})
    )
    assert never.health == health.UNHEALTHY
    assert never.problems == ["no run state yet: the mailbox has not run"]
    gone = assess("carol", StoredState("carol", MailboxState(), '"e2"'), RULES, directory)
    assert gone.health == health.NOT_POLLED
    assert report(gone).code == EXIT_OK, "a removed mailbox is not a problem"


def test_a_damaged_state_is_unhealthy_and_an_unreadable_one_is_unknown() -> None:
    damaged = assess("a", StoredState("a", None, '"e"', damaged="not JSON"), RULES, None)
    assert damaged.health == health.UNHEALTHY
    assert "damaged (not JSON)" in damaged.problems[0]
    lost = assess("b", RuntimeError("AccessDenied"), RULES, None)
    assert lost.health == health.UNREADABLE


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (125, "2 min"), (3 * HOUR + 120, "3 h 2 min"), (50 * HOUR, "2 d 2 h")],
)
def test_ago(seconds: float, text: str) -> None:
    assert health.ago(seconds) == text


def test_iso() -> None:
    assert health.iso(0) is None
    assert health.iso(1_800_000_000) == "2027-01-15T08:00:00Z"
