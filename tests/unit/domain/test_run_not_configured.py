"""A secret that is still the template's placeholder: "not configured yet", never polled.

The same in-memory world as test_run.py: the cached secret and a fresh read,
a state store that counts its reads and writes, a server that records logins.
"""

from __future__ import annotations

import logging

import pytest
from tests.unit.domain.test_run import World, secret

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.run import NOT_CONFIGURED_HINT
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import SecretError
from pop3_ingest.handlers.outcomes import (
    UNHEALTHY,
    Health,
    Outcome,
    health_of,
    outcome_of_stop,
)

# What template.yaml's MailboxSecret holds until an operator writes the mailbox's settings.
PLACEHOLDER = {"host": "pop3.example.invalid", "username": "CHANGE-ME", "tls": "implicit"}


@pytest.fixture
def world() -> World:
    return World()


def placeholder() -> MailboxConfig:
    return MailboxConfig.from_secret(PLACEHOLDER | {"password": "generated-Password-32"})


def counting_reads(world: World) -> list[int]:
    reads: list[int] = []
    world.states.after_read = lambda: reads.append(1)
    return reads


@pytest.mark.parametrize("take_lease", [True, False], ids=["single", "fleet"])
def test_a_placeholder_is_not_polled_and_says_how_to_configure_it(
    world: World, take_lease: bool
) -> None:
    world.current_secret = placeholder()
    reads = counting_reads(world)

    outcome = world.run(take_lease=take_lease, paced_by_schedule=not take_lease)

    assert outcome.summary.stopped is StopReason.NOT_CONFIGURED
    assert outcome.summary.mailbox == placeholder().mailbox
    assert world.server.logins == []
    assert (reads, world.states.writes, world.states.leases) == ([], 0, 0)
    # One INFO line that says what to do; nothing counted, no error, no failed login.
    ((level, message, fields),) = world.observer.lines
    assert level == logging.INFO
    assert message == NOT_CONFIGURED_HINT
    assert "put-secret-value" in message
    assert "SecretArn" in message
    assert fields == {"host": "pop3.example.invalid"}
    assert world.observer.counted == {}
    assert world.states.state().auth_failures == 0


def test_the_secret_is_read_again_past_the_cache_before_a_run_says_not_configured(
    world: World,
) -> None:
    # The operator wrote the mailbox's settings; the cache still holds the placeholder.
    world.current_secret = secret()
    outcome = world.run(cached=placeholder())
    assert outcome.summary.stopped is StopReason.COMPLETED
    assert world.reloads == 1
    assert world.server.logins == ["right"]


def test_a_configured_secret_is_not_read_again(world: World) -> None:
    assert world.stopped() is StopReason.COMPLETED
    assert world.reloads == 0


def test_a_real_configuration_error_still_fails(world: World) -> None:
    def broken() -> MailboxConfig:
        raise SecretError("mailbox secret is missing required field 'password'", "password")

    world.reload_secret = broken  # type: ignore[method-assign]
    with pytest.raises(SecretError, match="password"):
        world.run(cached=placeholder())
    assert world.server.logins == []


def test_not_configured_is_its_own_outcome_needing_attention_not_a_failure() -> None:
    outcome = outcome_of_stop(StopReason.NOT_CONFIGURED)
    assert outcome is Outcome.NOT_CONFIGURED
    assert outcome.metric == "RunsNotConfigured"
    health = health_of(outcome, RunSummary("m", stopped=StopReason.NOT_CONFIGURED))
    assert health is Health.ATTENTION
    assert health in UNHEALTHY  # Mode fleet's unhealthy-mailboxes alarm sees it
    assert health is not Health.FAILING
