"""What a run leaves for ``pop3-ingest status``: the last error (redacted, short, dated)
and the mail left pending, written only when something happened.

The run policy's fakes (``test_run``), with a core that reports a given summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.run import QuarantineWriter, pending_after
from pop3_ingest.domain.state import LAST_ERROR_CHARS, MailboxState, Seen
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import AuthError, ConnectionLost, ProtocolError

from .test_run import START, World

PASSWORD = "hunter2-Xq9!"


@pytest.fixture
def world() -> World:
    world = World()
    world.current_secret = MailboxConfig.from_secret(
        {"host": "pop.example.com", "username": "alice", "password": PASSWORD, "mailbox": "box"}
    )
    world.server.password = PASSWORD
    return world


@dataclass
class Reporting:
    """A core whose run ends with ``summary`` (and leaves ``seen`` announced messages)."""

    summary: RunSummary
    state: MailboxState
    seen: int = 0
    login_delay: int = 0

    def run(self) -> RunSummary:
        for i in range(self.seen):
            self.state.seen[f"{i:040x}"] = Seen(1, "a" * 64, START)
        return self.summary


def reporting(world: World, seen: int = 0, **summary: object) -> None:
    def start(config: MailboxConfig, state: MailboxState, _: QuarantineWriter) -> Reporting:
        return Reporting(RunSummary(mailbox="box", **summary), state, seen)  # type: ignore[arg-type]

    world.server.start_core = start  # type: ignore[method-assign]


def saved(world: World) -> MailboxState:
    return world.states.state()


# -- the last error ------------------------------------------------------------------


def test_a_failed_login_is_the_last_error_with_its_time(world: World) -> None:
    world.server.password = "changed"
    with pytest.raises(AuthError):
        world.run()
    assert saved(world).last_error.startswith("login failed: -ERR [AUTH]")
    assert saved(world).last_error_at == START


def test_the_last_error_never_shows_the_password_and_is_short(world: World) -> None:
    world.server.error = ProtocolError(f"-ERR you sent {PASSWORD} " + "x" * 5000)
    with pytest.raises(ProtocolError):
        world.run()
    error = saved(world).last_error
    assert error.startswith("POP3 server answered what the run cannot use: -ERR you sent ***")
    assert PASSWORD[:4] not in error
    assert len(error) <= LAST_ERROR_CHARS


def test_messages_that_failed_are_the_last_error(world: World) -> None:
    failures = [{"uidl": "u1", "error": "S3 said no"}, {"uidl": "u2", "error": "S3 timed out"}]
    reporting(world, failed=2, failures=failures)
    world.run()
    assert saved(world).last_error == "2 message(s) failed, the last: S3 timed out"


def test_a_run_stopped_by_an_unavailable_queue_says_so(world: World) -> None:
    reporting(world, stopped=StopReason.QUEUE_UNAVAILABLE)
    world.run()
    # Our own words are shown as they are, though "pointer" shares "nter" with the password.
    assert saved(world).last_error == "the pointer queue was unavailable"


def test_a_clean_run_keeps_the_last_error_and_its_time(world: World) -> None:
    world.server.error = ConnectionLost("connection reset")
    with pytest.raises(ConnectionLost):
        world.run()
    world.server.error = None
    world.now += 300
    world.run()
    assert saved(world).last_error == "connection lost: connection reset"
    assert saved(world).last_error_at == START
    assert saved(world).last_completed == START + 300  # later: no longer failing


def test_a_busy_mailbox_is_not_an_error(world: World) -> None:
    world.server.busy_code = "IN-USE"
    world.run()
    assert saved(world).last_error == ""


# -- pending -------------------------------------------------------------------------


def test_nothing_is_pending_after_a_completed_run(world: World) -> None:
    reporting(world, messages_on_server=10, deleted=3)
    world.run()
    assert saved(world).pending == 0


def test_a_run_cut_off_leaves_what_it_did_not_reach_pending(world: World) -> None:
    # 10 listed: 4 deleted, 1 quarantined, 1 oversized, 2 announced but not deleted yet.
    reporting(
        world,
        seen=2,
        stopped=StopReason.DEADLINE,
        messages_on_server=10,
        deleted=4,
        in_quarantine=1,
        oversized=1,
    )
    world.run()
    assert saved(world).pending == 2


def test_pending_counts_neither_kept_mail_nor_the_baseline() -> None:
    state = MailboxState(baseline={"1" * 40: 5, "2" * 40: 5})
    state.seen["3" * 40] = Seen(1, "a" * 64, START)
    summary = RunSummary(mailbox="box", messages_on_server=4, stopped=StopReason.MESSAGE_CAP)
    assert pending_after(summary, state) == 1


# -- written only when something happened ---------------------------------------------


def test_an_idle_run_after_a_failure_writes_nothing(world: World) -> None:
    world.server.error = ConnectionLost("connection reset")
    with pytest.raises(ConnectionLost):
        world.run(take_lease=False)
    world.server.error = None
    world.now += 300
    world.run(take_lease=False)  # the first clean run: the streaks are reset, written
    world.states.writes = 0
    world.now += 300
    world.run(take_lease=False)
    assert world.states.writes == 0


def test_pending_going_back_to_zero_is_written_once(world: World) -> None:
    reporting(world, stopped=StopReason.DEADLINE, messages_on_server=5)
    world.run(take_lease=False)
    assert saved(world).pending == 5
    reporting(world, messages_on_server=5, deleted=5)
    world.states.writes = 0
    world.now += 300
    world.run(take_lease=False)
    world.now += 300
    world.run(take_lease=False)
    assert saved(world).pending == 0
    assert world.states.writes == 1
