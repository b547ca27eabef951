"""A host that keeps failing to connect is tried less and less often (run_mailbox).

Each run that cannot connect (ConnectError: DNS, refused, timed out) adds to a
streak kept in the mailbox's state. One failure is a blip and costs nothing;
from the second in a row the next attempt waits a back-off that doubles with
the streak, up to a cap. Any run that reaches the server ends the streak. The
fakes are those of test_run.py.
"""

from __future__ import annotations

import pytest
from tests.unit.domain.test_run import World

from pop3_ingest.domain.run import unreachable_backoff
from pop3_ingest.domain.summary import StopReason
from pop3_ingest.errors import AuthError, ConnectError, ConnectionLost, Pop3Error

ONE_HOUR = 3600.0


def unreachable_waits(world: World, runs: int) -> list[float]:
    """The back-off each failed connect in a row gave, each run started once it passed."""
    world.server.error = ConnectError("cannot connect to pop.example.com:995: refused")
    waits = []
    for _ in range(runs):
        with pytest.raises(ConnectError):
            world.run()
        waits.append(max(0.0, world.states.state().backoff_until - world.now))
        world.now += waits[-1] + 1
    return waits


def test_a_host_that_keeps_failing_to_connect_backs_off_more_and_more_up_to_a_cap() -> None:
    world = World()
    waits = unreachable_waits(world, runs=12)
    assert waits[0] == 0  # one failure is a blip
    assert 0 < waits[1] < waits[2]
    assert waits == sorted(waits)
    assert waits[-1] == waits[-2] <= ONE_HOUR  # capped
    assert world.states.state().unreachable_streak == 12
    assert world.observer.counted["ConnectFailed"] == 12
    assert len(world.server.logins) == 12  # one attempt per run that was due


def test_while_backing_off_the_host_is_not_tried_and_the_skip_says_why() -> None:
    world = World()
    unreachable_waits(world, runs=3)
    world.now = world.states.state().backoff_until - 1  # just before the back-off passes
    attempts = len(world.server.logins)
    assert world.stopped() is StopReason.BACKOFF
    assert len(world.server.logins) == attempts
    assert any("could not be reached" in message for _, message, _ in world.observer.lines)


def test_a_single_failed_connect_costs_no_tick() -> None:
    world = World()
    unreachable_waits(world, runs=1)
    world.server.error = None
    assert world.stopped() is StopReason.COMPLETED
    assert world.states.state().unreachable_streak == 0


def test_a_run_that_reaches_the_server_ends_the_streak() -> None:
    world = World()
    unreachable_waits(world, runs=4)
    world.server.error = None
    assert world.stopped() is StopReason.COMPLETED
    assert world.states.state().unreachable_streak == 0
    again = unreachable_waits(world, runs=2)
    assert again == [unreachable_backoff(1), unreachable_backoff(2)]  # the growth starts over


@pytest.mark.parametrize(
    "error",
    [
        AuthError("-ERR [AUTH] invalid login", code="AUTH"),
        ConnectionLost("connection lost at RETR 1"),
        Pop3Error("-ERR UIDL not supported"),
    ],
    ids=["login refused", "connection lost", "protocol error"],
)
def test_a_server_that_answered_is_not_unreachable(error: Exception) -> None:
    world = World()
    unreachable_waits(world, runs=2)
    world.now = world.states.state().backoff_until
    world.server.error = error
    with pytest.raises(type(error)):
        world.run()
    assert world.states.state().unreachable_streak == 0
