"""The run policy (run_mailbox) with in-memory fakes: when to log in, back off, retry, save.

The fakes stand in at the ports: a dict-backed state store with the S3 store's
lease and conditional-write rules, a scripted server playing the core, the
secret as the cache and a fresh read would see it, a hand-moved clock, and an
observer that keeps what was counted and logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.message import ServerMessage, failure_key
from pop3_ingest.domain.run import (
    QuarantineWriter,
    RunOutcome,
    RunPorts,
    busy_backoff,
    lease_owner,
    run_mailbox,
)
from pop3_ingest.domain.state import (
    LEASE_MARGIN_SECONDS,
    REWRITE_AFTER_SECONDS,
    Failure,
    MailboxState,
)
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    ProtocolError,
    StoreError,
    TlsError,
)

MAILBOX = "box"
OWNER = "run-1"
START = 1_800_000_000.0
LIMIT = 3  # login failures in a row that suspend the mailbox
SECONDS_LEFT = 300.0  # of the invocation, as the lease sees it


def secret(password: str = "right", **fields: Any) -> MailboxConfig:
    data = {"host": "pop.example.com", "username": "alice", "password": password}
    return MailboxConfig.from_secret({**data, "mailbox": MAILBOX, **fields})


# -- the fakes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """A stored state and the version number that stands in for S3's ETag."""

    state: MailboxState
    number: int
    damaged: str | None = None  # the stored document was set aside and read as empty


class MemoryStates:
    """The state store in a dict: conditional writes merge, a live lease of another refuses."""

    def __init__(self) -> None:
        self.stored: dict[str, Version] = {}
        self.quarantine: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.leases = 0  # leases written
        self.failing = False  # every write raises StoreError (the deadline came first)
        self.damaged: str | None = None  # the next read finds a damaged document
        self.after_read: Callable[[], None] = lambda: None

    def state(self, mailbox: str = MAILBOX) -> MailboxState:
        return self.stored.get(mailbox, Version(MailboxState(), 0)).state

    def put(self, state: MailboxState, mailbox: str = MAILBOX) -> Version:
        number = self.stored[mailbox].number + 1 if mailbox in self.stored else 1
        self.stored[mailbox] = Version(state.copy(), number)
        return Version(state.copy(), number)

    def read(self, mailbox: str) -> Version:
        found = self.stored.get(mailbox, Version(MailboxState(), 0))
        self.after_read()
        if self.damaged is not None:
            damaged, self.damaged = self.damaged, None
            return Version(MailboxState(), found.number, damaged)
        return Version(found.state.copy(), found.number)

    def take_lease(
        self, mailbox: str, owner: str, until: float, now: float, current: Version
    ) -> Version | None:
        latest = self.stored.get(mailbox, current)
        holder = latest.state.lease_holder(now)
        if holder is not None and holder != owner:
            return None
        leased = latest.state.copy()
        leased.lease_owner, leased.lease_until = owner, until
        self.leases += 1
        return self.put(leased, mailbox)

    def write(self, mailbox: str, state: MailboxState, base: Version) -> Version:
        if self.failing:
            raise StoreError(f"no time left to write the run state of {mailbox}")
        latest = self.stored.get(mailbox, base)
        if latest.number != base.number:
            state = MailboxState.merge(base.state, state, latest.state)
        self.writes += 1
        return self.put(state, mailbox)

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None:
        self.quarantine[f"{mailbox}/{digest}"] = record


@dataclass
class Core:
    """One login to the scripted server: what ``run()`` does is the server's script."""

    server: FakeServer
    config: MailboxConfig
    state: MailboxState
    on_quarantine: QuarantineWriter

    @property
    def login_delay(self) -> int:
        return self.server.login_delay

    def run(self) -> RunSummary:
        self.server.logins.append(self.config.password)
        self.server.lease_seen.append((self.server.states.state().lease_owner, self.state))
        if self.config.password != self.server.password:
            raise AuthError("-ERR [AUTH] invalid login", code="AUTH")
        if self.server.busy_code is not None:
            raise MailboxBusy(f"-ERR [{self.server.busy_code}] try later", self.server.busy_code)
        if self.server.error is not None:
            raise self.server.error
        self.server.during_run(self)
        return RunSummary(mailbox=self.config.mailbox, stopped=self.server.stopped)


@dataclass
class FakeServer:
    """The mailbox's server as the core meets it; every login is recorded."""

    states: MemoryStates
    password: str = "right"
    busy_code: str | None = None
    login_delay: int = 0
    error: Exception | None = None
    stopped: StopReason = StopReason.COMPLETED
    during_run: Callable[[Core], None] = lambda core: None
    logins: list[str] = field(default_factory=list)
    lease_seen: list[tuple[str | None, MailboxState]] = field(default_factory=list)

    def start_core(
        self, config: MailboxConfig, state: MailboxState, on_quarantine: QuarantineWriter
    ) -> Core:
        return Core(self, config, state, on_quarantine)


@dataclass
class Observer:
    counted: Counter[str] = field(default_factory=Counter)
    lines: list[tuple[int, str, dict[str, object]]] = field(default_factory=list)

    def count(self, metric: str) -> None:
        self.counted[metric] += 1

    def log(self, level: int, message: str, **fields: object) -> None:
        self.lines.append((level, message, fields))

    def errors(self) -> list[str]:
        return [message for level, message, _ in self.lines if level >= logging.ERROR]


@dataclass
class World:
    """Everything around one mailbox; ``run`` is one invocation of the policy."""

    states: MemoryStates = field(default_factory=MemoryStates)
    observer: Observer = field(default_factory=Observer)
    now: float = START
    current_secret: MailboxConfig = field(default_factory=secret)
    reloads: int = 0

    def __post_init__(self) -> None:
        self.server = FakeServer(self.states)

    def reload_secret(self) -> MailboxConfig:
        self.reloads += 1
        return self.current_secret

    def run(
        self,
        cached: MailboxConfig | None = None,
        owner: str = OWNER,
        *,
        take_lease: bool = True,
        paced_by_schedule: bool = False,
    ) -> RunOutcome:
        ports: RunPorts[Version] = RunPorts(
            states=self.states,
            reload_secret=self.reload_secret,
            start_core=self.server.start_core,
            observer=self.observer,
            seconds_left=lambda: SECONDS_LEFT,
            clock=lambda: self.now,
        )
        config = cached or self.current_secret
        return run_mailbox(
            config,
            ports,
            owner=owner,
            auth_failure_limit=LIMIT,
            take_lease=take_lease,
            paced_by_schedule=paced_by_schedule,
        )

    def stopped(self, cached: MailboxConfig | None = None) -> StopReason:
        return self.run(cached).summary.stopped

    def fail_logins(self, times: int, cached: MailboxConfig) -> None:
        for _ in range(times):
            with pytest.raises(AuthError):
                self.run(cached)
            self.now += 60


@pytest.fixture
def world() -> World:
    return World()


def leased_to(world: World, owner: str, until: float) -> None:
    state = MailboxState()
    state.lease_owner, state.lease_until = owner, until
    world.states.put(state)


# -- one run at a time -------------------------------------------------------------


def test_a_mailbox_leased_by_another_run_is_left_alone(world: World) -> None:
    leased_to(world, "run-other", START + 60)
    assert world.stopped() is StopReason.LOCKED
    assert world.server.logins == []
    assert world.observer.counted["MailboxLocked"] == 1
    (warning,) = [fields for level, _, fields in world.observer.lines if level == logging.WARNING]
    assert warning["lease_owner"] == "run-other"  # the operator sees who holds it
    assert world.states.state().lease_owner == "run-other"  # not taken, not given back
    assert world.states.writes == 0


def test_a_lease_taken_between_read_and_claim_stops_the_run(world: World) -> None:
    def another_run_claims() -> None:
        world.states.after_read = lambda: None
        leased_to(world, "run-other", START + 60)

    world.states.after_read = another_run_claims
    assert world.stopped() is StopReason.LOCKED
    assert world.server.logins == []
    assert world.observer.counted["MailboxLocked"] == 1


@pytest.mark.parametrize(
    ("holder", "until"),
    [("run-other", START - 1), (OWNER, START + 60)],
    ids=["expired", "our-own"],
)
def test_an_expired_lease_or_our_own_does_not_block(
    world: World, holder: str, until: float
) -> None:
    leased_to(world, holder, until)
    assert world.stopped() is StopReason.COMPLETED
    assert len(world.server.logins) == 1


def test_the_lease_is_held_while_the_core_runs_and_given_back_after(world: World) -> None:
    world.run()
    ((holder, _),) = world.server.lease_seen
    assert holder == OWNER
    after = world.states.state()
    assert after.lease_owner is None
    assert after.lease_holder(START) is None


def test_the_lease_lasts_no_longer_than_the_invocation_could(world: World) -> None:
    leases: list[float] = []
    world.server.during_run = lambda core: leases.append(world.states.state().lease_until)
    world.run()
    (until,) = leases
    assert START < until <= START + SECONDS_LEFT + LEASE_MARGIN_SECONDS


def test_the_lease_owner_is_the_request_id_else_a_fresh_one() -> None:
    request_id = "5a1c2f2e-0000-4000-8000-000000000001"
    assert lease_owner(request_id) == request_id
    made_up = {lease_owner(None), lease_owner(""), lease_owner("has space"), lease_owner(7)}
    assert len(made_up) == 4  # each invocation without a usable id gets its own
    assert all(owner and " " not in owner for owner in made_up)


# -- every path saves the state and gives the lease back ---------------------------


@pytest.mark.parametrize(
    ("script", "raised", "counted"),
    [
        ({}, None, set()),
        ({"busy_code": "IN-USE"}, None, {"MailboxBusy"}),
        ({"password": "changed-on-the-server"}, AuthError, {"LoginFailed"}),
        ({"error": ConnectError("cannot connect")}, ConnectError, {"ConnectFailed"}),
        ({"error": TlsError("certificate verify failed")}, TlsError, {"ConnectFailed"}),
        ({"error": ConnectionLost("reset by peer")}, ConnectionLost, {"ConnectionLost"}),
        ({"error": ProtocolError("UIDL refused")}, ProtocolError, {"ProtocolError"}),
        ({"error": RuntimeError("a bug")}, RuntimeError, set()),
    ],
    ids=["completed", "busy", "auth", "connect", "tls", "lost", "protocol", "unexpected"],
)
def test_every_path_saves_the_state_and_gives_the_lease_back(
    world: World, script: dict[str, Any], raised: type[Exception] | None, counted: set[str]
) -> None:
    for name, value in script.items():
        setattr(world.server, name, value)
    if raised is None:
        world.run()
    else:
        with pytest.raises(raised):
            world.run()
    saved = world.states.state()
    assert world.states.writes == 1
    assert saved.lease_owner is None
    assert saved.last_attempt == START
    assert set(world.observer.counted) == counted


def test_what_the_core_changed_in_the_state_is_saved(world: World) -> None:
    def remember(core: Core) -> None:
        core.state.busy_streak = 0
        core.state.seen_content["a" * 64] = world.now

    world.server.during_run = remember
    world.run()
    assert "a" * 64 in world.states.state().seen_content


def test_a_state_that_cannot_be_saved_is_reported_not_raised(world: World) -> None:
    world.states.failing = True
    outcome = world.run()
    assert outcome.summary.stopped is StopReason.COMPLETED
    assert world.observer.counted["StateNotSaved"] == 1
    assert "run state not saved" in world.observer.errors()


def test_a_failed_save_does_not_hide_the_run_s_own_error(world: World) -> None:
    world.states.failing = True
    world.server.error = ConnectionLost("connection reset by peer")
    with pytest.raises(ConnectionLost):
        world.run()
    assert world.observer.counted["StateNotSaved"] == 1


def test_a_write_racing_another_writer_is_merged_not_lost(world: World) -> None:
    def another_writer(core: Core) -> None:
        theirs = world.states.state().copy()
        theirs.seen_content["b" * 64] = world.now
        world.states.put(theirs)
        core.state.seen_content["a" * 64] = world.now

    world.server.during_run = another_writer
    world.run()
    assert {"a" * 64, "b" * 64} <= set(world.states.state().seen_content)


# -- logins that fail: counted per secret, suspended, resumed ----------------------


def test_a_refused_login_is_counted_against_the_secret_saved_and_raised(world: World) -> None:
    stale = secret("stale")
    world.current_secret = stale  # a fresh read says the same: no rotation
    with pytest.raises(AuthError):
        world.run()
    saved = world.states.state()
    assert saved.auth_failures == 1
    assert saved.auth_fingerprint == stale.fingerprint()
    assert world.observer.counted["LoginFailed"] == 1
    assert "login failed" in world.observer.errors()


def test_repeated_failures_suspend_logins_until_the_secret_changes(world: World) -> None:
    wrong = secret("wrong")
    world.current_secret = wrong
    world.fail_logins(LIMIT, wrong)
    assert world.server.logins == ["wrong"] * LIMIT
    assert world.stopped(wrong) is StopReason.AUTH_SUSPENDED
    assert len(world.server.logins) == LIMIT  # no login past the limit
    assert world.observer.counted["LoginSuspended"] == 1
    world.now += 3600
    assert world.stopped(wrong) is StopReason.AUTH_SUSPENDED  # time alone does not lift it

    world.current_secret = secret("right")  # the operator fixes the secret
    assert world.stopped() is StopReason.COMPLETED
    assert world.states.state().auth_failures == 0


def test_failures_below_the_limit_do_not_suspend(world: World) -> None:
    wrong = secret("wrong")
    world.current_secret = wrong
    world.fail_logins(LIMIT - 1, wrong)
    with pytest.raises(AuthError):
        world.run(wrong)
    assert len(world.server.logins) == LIMIT


def test_a_new_secret_starts_its_own_count(world: World) -> None:
    first, second = secret("wrong-1"), secret("wrong-2")
    world.current_secret = first
    world.fail_logins(LIMIT - 1, first)
    world.current_secret = second
    world.fail_logins(1, second)
    saved = world.states.state()
    assert saved.auth_failures == 1
    assert saved.auth_fingerprint == second.fingerprint()


def test_a_successful_login_clears_the_count(world: World) -> None:
    world.current_secret = secret("wrong")
    world.fail_logins(LIMIT - 1, world.current_secret)
    world.current_secret = secret("right")
    world.run()
    assert world.states.state().auth_failures == 0
    assert world.states.state().auth_fingerprint == secret("right").fingerprint()


# -- a secret rotated under the cache ----------------------------------------------


def test_a_refused_login_is_retried_once_with_a_rotated_secret(world: World) -> None:
    world.server.password = "rotated"
    world.current_secret = secret("rotated")
    outcome = world.run(cached=secret("before-rotation"))
    assert outcome.summary.stopped is StopReason.COMPLETED
    assert world.server.logins == ["before-rotation", "rotated"]
    assert world.reloads == 1


def test_a_refused_login_is_not_retried_when_the_secret_did_not_change(world: World) -> None:
    world.current_secret = secret("wrong")
    with pytest.raises(AuthError):
        world.run()
    assert world.server.logins == ["wrong"]
    assert world.reloads == 1  # looked, found the same secret


def test_a_rotated_secret_is_tried_once_only(world: World) -> None:
    world.server.password = "neither"
    world.current_secret = secret("rotated-but-wrong-too")
    with pytest.raises(AuthError):
        world.run(cached=secret("stale"))
    assert world.server.logins == ["stale", "rotated-but-wrong-too"]


def test_a_suspended_mailbox_resumes_at_once_when_the_secret_was_rotated(world: World) -> None:
    stale = secret("stale")
    world.current_secret = stale
    world.fail_logins(LIMIT, stale)
    world.server.password = "rotated"
    world.current_secret = secret("rotated")
    outcome = world.run(cached=stale)  # the cache still holds the stale secret
    assert outcome.summary.stopped is StopReason.COMPLETED
    assert world.server.logins[-1] == "rotated"


def test_a_login_that_works_never_reads_the_secret_again(world: World) -> None:
    world.run()
    assert world.reloads == 0


# -- waiting: back-off, busy servers, login delay, interval ------------------------


def test_a_back_off_in_the_state_is_honoured_until_it_passes(world: World) -> None:
    state = MailboxState()
    state.backoff_until = START + 600
    world.states.put(state)
    assert world.stopped() is StopReason.BACKOFF
    world.now = START + 599
    assert world.stopped() is StopReason.BACKOFF
    assert world.server.logins == []
    world.now = START + 600
    assert world.stopped() is StopReason.COMPLETED


def busy_waits(world: World, code: str, runs: int) -> list[float]:
    """The back-off each busy answer in a row gave, each run started once it passed."""
    world.server.busy_code = code
    waits = []
    for _ in range(runs):
        outcome = world.run()
        assert outcome.summary.stopped is StopReason.BUSY
        assert outcome.busy_code == code
        waits.append(world.states.state().backoff_until - world.now)
        world.now = world.states.state().backoff_until
    return waits


@pytest.mark.parametrize("code", ["IN-USE", "SYS/TEMP", "LOGIN-DELAY"])
def test_a_busy_server_gets_a_growing_back_off_that_is_capped(world: World, code: str) -> None:
    waits = busy_waits(world, code, runs=12)
    assert waits[1] > waits[0] > 0
    assert waits == sorted(waits)
    assert waits[-1] == waits[-2]  # capped
    assert waits[-1] <= 3600  # never more than an hour
    assert world.states.state().busy_streak == 12
    assert world.observer.counted["MailboxBusy"] == 12


def test_a_mailbox_in_use_is_tried_again_sooner_than_a_failing_server() -> None:
    in_use, failing = busy_waits(World(), "IN-USE", 12), busy_waits(World(), "SYS/TEMP", 12)
    assert in_use[0] < failing[0]
    assert in_use[-1] < failing[-1]
    assert busy_backoff("IN-USE", 1) == in_use[0]


def test_a_run_that_gets_in_ends_the_busy_streak(world: World) -> None:
    busy_waits(world, "IN-USE", runs=3)
    world.server.busy_code = None
    assert world.stopped() is StopReason.COMPLETED
    assert world.states.state().busy_streak == 0
    world.server.busy_code = "IN-USE"
    again = busy_waits(world, "IN-USE", runs=1)
    assert again[0] == busy_backoff("IN-USE", 1)  # the growth starts over


def test_the_server_s_login_delay_is_kept_between_runs(world: World) -> None:
    world.server.login_delay = 900
    world.run()
    assert world.states.state().backoff_until == START + 900
    world.now = START + 600
    assert world.stopped() is StopReason.BACKOFF
    world.now = START + 900
    assert world.stopped() is StopReason.COMPLETED
    assert len(world.server.logins) == 2


def test_a_mailbox_with_an_interval_is_skipped_until_it_is_due(world: World) -> None:
    world.current_secret = secret(interval_minutes=60)
    world.run()
    for minutes in (1, 30, 55):
        world.now = START + minutes * 60
        assert world.stopped() is StopReason.NOT_DUE
    assert len(world.server.logins) == 1
    world.now = START + 60 * 60
    assert world.stopped() is StopReason.COMPLETED


def test_a_mailbox_paced_by_its_own_schedule_is_never_skipped_as_not_due(world: World) -> None:
    # A flexible window can bring two ticks of a 60-minute schedule 30 minutes apart.
    world.current_secret = secret(interval_minutes=60)
    for minutes in (0, 30, 45):
        world.now = START + minutes * 60
        outcome = world.run(take_lease=False, paced_by_schedule=True)
        assert outcome.summary.stopped is StopReason.COMPLETED
    assert len(world.server.logins) == 3
    world.now = START + 46 * 60
    assert world.stopped() is StopReason.NOT_DUE  # the same mailbox, not scheduled


def test_a_mailbox_without_an_interval_runs_every_time(world: World) -> None:
    for _ in range(3):
        assert world.stopped() is StopReason.COMPLETED
        world.now += 1
    assert len(world.server.logins) == 3


def test_a_skipped_run_changes_nothing_stored(world: World) -> None:
    state = MailboxState()
    state.backoff_until = START + 600
    world.states.put(state)
    before = world.states.state().to_json()
    world.run()
    assert world.states.state().to_json() == before
    assert world.states.writes == 0


# -- what a run remembers --------------------------------------------------------


@pytest.mark.parametrize(
    ("stopped", "completed"),
    [(StopReason.COMPLETED, True), (StopReason.DEADLINE, False), (StopReason.MESSAGE_CAP, False)],
)
def test_only_a_completed_run_counts_as_completed(
    world: World, stopped: StopReason, completed: bool
) -> None:
    def takes_a_while(core: Core) -> None:
        world.now += 5

    world.server.stopped = stopped
    world.server.during_run = takes_a_while
    outcome = world.run()
    assert outcome.summary.stopped is stopped
    finished = world.states.state().last_completed
    assert finished == (world.now if completed else 0.0)  # when it finished, not started


def test_a_quarantined_message_gets_a_record_an_operator_can_read(world: World) -> None:
    message = ServerMessage(number=3, uidl="uidl-0003", size=1234)
    failure = Failure(count=3, error="store refused it", first_at=START - 600, last_at=START)
    world.server.during_run = lambda core: core.on_quarantine(message, failure)
    world.run()
    record = world.states.quarantine[f"{MAILBOX}/{failure_key(message)}"]
    assert record["mailbox"] == MAILBOX
    assert record["uidl"] == message.uidl
    assert record["size"] == message.size
    assert record["failures"] == failure.count
    assert record["error"] == failure.error
    assert record["first_failed_at"] < record["quarantined_at"]


# -- runs kept apart by their trigger (Mode fleet): no lease, writes only when worth it --


def fleet_run(world: World) -> RunOutcome:
    return world.run(take_lease=False)


def an_earlier_fleet_run(world: World) -> None:
    """The mailbox as a first run leaves it (which writes: there was no state yet)."""
    fleet_run(world)
    world.states.writes = 0
    world.now += 300


def test_without_a_lease_a_run_with_nothing_new_writes_nothing(world: World) -> None:
    an_earlier_fleet_run(world)
    before = world.states.state().copy()
    assert fleet_run(world).summary.stopped is StopReason.COMPLETED
    assert len(world.server.logins) == 2
    assert world.states.writes == 0
    assert world.states.leases == 0
    assert world.states.state() == before


def test_without_a_lease_what_a_run_changed_is_written_once(world: World) -> None:
    an_earlier_fleet_run(world)

    def new_mail(core: Core) -> None:
        core.state.seen_content["a" * 64] = world.now

    world.server.during_run = new_mail
    fleet_run(world)
    ((holder, _),) = world.server.lease_seen[1:]
    assert holder is None  # no lease was taken for the run
    assert (world.states.writes, world.states.leases) == (1, 0)
    saved = world.states.state()
    assert "a" * 64 in saved.seen_content
    assert saved.last_attempt == world.now  # written along with the change


def test_without_a_lease_a_live_lease_of_another_run_is_still_honoured(world: World) -> None:
    leased_to(world, "run-other", START + 60)
    assert fleet_run(world).summary.stopped is StopReason.LOCKED
    assert world.server.logins == []
    assert world.states.state().lease_owner == "run-other"


def test_without_a_lease_an_unchanged_state_is_still_rewritten_twice_a_day(
    world: World,
) -> None:
    an_earlier_fleet_run(world)
    world.now += REWRITE_AFTER_SECONDS - 300 - 1
    fleet_run(world)
    assert world.states.writes == 0
    world.now += 1 + 300
    fleet_run(world)
    assert world.states.writes == 1
    assert world.states.state().last_attempt == world.now


def test_without_a_lease_a_damaged_state_is_replaced_even_when_nothing_changed(
    world: World,
) -> None:
    an_earlier_fleet_run(world)
    world.states.damaged = "run state is not JSON"
    fleet_run(world)
    assert world.states.writes == 1  # else it is set aside again on every run


@pytest.mark.parametrize(
    ("script", "raised"),
    [
        ({"busy_code": "IN-USE"}, None),
        ({"password": "changed-on-the-server"}, AuthError),
        ({"error": ConnectError("cannot connect")}, ConnectError),
    ],
    ids=["busy", "auth", "connect"],
)
def test_without_a_lease_what_a_failed_run_learned_is_written_once(
    world: World, script: dict[str, Any], raised: type[Exception] | None
) -> None:
    an_earlier_fleet_run(world)
    for name, value in script.items():
        setattr(world.server, name, value)
    if raised is None:
        fleet_run(world)
    else:
        with pytest.raises(raised):
            fleet_run(world)
    assert (world.states.writes, world.states.leases) == (1, 0)
    assert world.states.state().lease_owner is None
