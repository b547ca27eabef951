"""Back-off and login suspension: never hammer a mailbox into a lockout."""

from __future__ import annotations

import json

import pytest
from tests.support.harness import HostileHarness, messages

from pop3_ingest.errors import AuthError

pytestmark = pytest.mark.integration


def metric_names(harness: HostileHarness) -> set[str]:
    names: set[str] = set()
    for record in harness.records():
        for block in record.get("_aws", {}).get("CloudWatchMetrics", []):
            names |= {
                m["Name"] for m in block["Metrics"] if record.get(m["Name"]) not in (0, [0.0])
            }
    return names


def test_in_use_backs_off_without_logging_in_again(hostile: HostileHarness) -> None:
    fake = hostile.serve(
        messages(2), replies={"PASS": b"-ERR [IN-USE] locked by another client\r\n"}
    )
    first = hostile.attempt()
    hostile.check(first)
    assert first.stopped == "busy"
    assert first.summary is not None
    assert first.summary["busy_code"] == "IN-USE"
    assert fake.connections == 1
    second = hostile.attempt()
    assert second.stopped == "backoff"
    assert fake.connections == 1  # the second run did not even connect
    assert "MailboxBusy" in metric_names(hostile)


@pytest.mark.parametrize("code", ["LOGIN-DELAY", "SYS/TEMP"])
def test_other_busy_codes_back_off_too(hostile: HostileHarness, code: str) -> None:
    fake = hostile.serve(messages(1), replies={"PASS": f"-ERR [{code}] later\r\n".encode()})
    assert hostile.attempt().stopped == "busy"
    assert hostile.attempt().stopped == "backoff"
    assert fake.connections == 1


def test_advertised_login_delay_is_honoured_between_runs(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(3), extra_capabilities=["LOGIN-DELAY 900"])
    first = hostile.attempt()
    hostile.check(first)
    assert first.summary is not None
    assert first.summary["deleted"] == 3
    fake.messages.extend(messages(1, start=10))
    second = hostile.attempt()
    assert second.stopped == "backoff"
    assert fake.connections == 1


def test_repeated_auth_failures_suspend_the_mailbox_until_the_secret_changes(
    hostile: HostileHarness,
) -> None:
    fake = hostile.serve(messages(1))
    hostile.configure(hostile.secret(password="wrong-password-1"))
    for _ in range(3):
        outcome = hostile.attempt()
        assert isinstance(outcome.error, AuthError)
    assert fake.connections == 3
    suspended = hostile.attempt()
    assert suspended.stopped == "auth_suspended"
    assert fake.connections == 3  # no fourth login attempt
    assert "LoginSuspended" in metric_names(hostile)
    hostile.logged("login suspended")

    # The operator fixes the secret (still cached here): the next run notices
    # the change, logs in and drains the mailbox.
    hostile.configure(hostile.secret())
    fixed = hostile.attempt()
    hostile.check(fixed)
    assert fixed.summary is not None
    assert fixed.summary["deleted"] == 1


def test_a_secret_rotated_during_the_cache_window_is_picked_up_at_once(
    hostile: HostileHarness,
) -> None:
    fake = hostile.serve(messages(2), password="old-password")
    assert hostile.attempt().summary is not None  # caches the secret
    fake.password = "new-password"  # rotated on the server and in Secrets Manager
    hostile.configure(hostile.secret(password="new-password"))
    fake.messages.extend(messages(1, start=10))
    outcome = hostile.attempt()  # the cached secret is stale: re-read and retry once
    hostile.check(outcome)
    assert outcome.summary is not None
    assert outcome.summary["deleted"] == 1


def test_interval_minutes_skips_runs_that_are_not_due(hostile: HostileHarness) -> None:
    fake = hostile.serve(messages(1))
    hostile.configure(hostile.secret(interval_minutes=60))
    assert hostile.attempt().summary["deleted"] == 1  # type: ignore[index]
    fake.messages.extend(messages(1, start=5))
    assert hostile.attempt().stopped == "not_due"
    assert fake.connections == 1
    state_key = "mail/_state/hostile.json"
    state = json.loads(hostile.aws.get_object(state_key))
    assert state["last_attempt"] > 0
