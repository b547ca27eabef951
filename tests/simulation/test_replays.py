"""Named walks through the simulation: the sequences that broke (or, with the
hole put back, would break) the rules, replayed step by step on every run.

The random search (test_simulation.py) finds such sequences; these keep the
rarest of them in the suite for good, with the same models and invariants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import tests.simulation.test_simulation as simulation
from tests.simulation.test_simulation import IngestSimulation, Letter

pytestmark = pytest.mark.integration

SMALL = Letter(subject=b"", body=(), size="small", final_crlf=False)


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[IngestSimulation]:
    # event() and target() belong to a hypothesis test; outside one they are no-ops.
    monkeypatch.setattr(simulation, "event", lambda *a, **k: None)
    monkeypatch.setattr(simulation, "target", lambda *a, **k: None)
    machine = IngestSimulation()
    try:
        yield machine
    finally:
        machine.teardown()


def check_all(sim: IngestSimulation) -> None:
    sim.deadlines_kept()
    sim.nothing_lost()
    sim.nothing_overwritten()
    sim.pointers_sqs_can_take()


def walk(sim: IngestSimulation, *steps: Callable[[], object]) -> None:
    for step in steps:
        step()
        check_all(sim)


def test_an_object_without_a_digest_is_not_proof_for_a_reused_uidl(sim: IngestSimulation) -> None:
    # Hole 2: a digest-less object under the key a reused UIDL maps to.
    sim.start(
        "dovecot", pipelining=False, uidl=True, cap=None, delete=True, window=1, commit_every=2
    )
    walk(
        sim,
        lambda: sim.deliver(choice="fresh", letter=Letter(subject=b"a", body=()), pick=0),
        sim.heal,
        sim.legacy_objects,
        lambda: sim.deliver(choice="reuse same size", letter=Letter(subject=b"b", body=()), pick=0),
        sim.heal,
    )


def test_a_run_returns_in_time_while_s3_calls_hang(sim: IngestSimulation) -> None:
    # Hole 6: the deadline falls during a 40-simulated-second S3 call.
    sim.start(
        "dovecot", pipelining=False, uidl=False, cap=None, delete=False, window=1, commit_every=2
    )
    walk(
        sim,
        lambda: sim.deliver(choice="fresh", letter=SMALL, pick=0),
        lambda: sim.run_into_a_hanging_call(extra=1.0, which="s3"),
        sim.heal,
    )


def test_a_reused_uidl_of_the_same_size_after_a_deletion_is_reached(
    sim: IngestSimulation,
) -> None:
    # Found by the search: such a message was taken for the deleted one.
    sim.start(
        "dovecot", pipelining=False, uidl=True, cap=None, delete=True, window=1, commit_every=2
    )
    walk(
        sim,
        lambda: sim.deliver(choice="fresh", letter=SMALL, pick=0),
        sim.heal,
        lambda: sim.lose_quit_answers(sessions=1),
        lambda: sim.deliver(
            choice="reuse same size",
            letter=Letter(
                subject=b"", body=(), size="small", final_crlf=False, status_first_line=True
            ),
            pick=0,
        ),
        sim.heal,
    )


def test_a_capped_window_of_status_like_messages_does_not_strand_the_rest(
    sim: IngestSimulation,
) -> None:
    # Found by the search: three quarantined messages held a capped window for ever.
    status_like = Letter(subject=b"", body=(), size="small", status_first_line=True)
    sim.start("gmail", pipelining=False, uidl=True, cap=3, delete=True, window=1, commit_every=1000)
    walk(
        sim,
        *(lambda: sim.deliver(choice="fresh", letter=status_like, pick=0) for _ in range(3)),
        lambda: sim.deliver(choice="fresh", letter=SMALL, pick=0),
        sim.heal,
    )
