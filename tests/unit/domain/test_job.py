"""When a fleet job is stale (domain/job.py): a newer tick takes over, or a run came since."""

from __future__ import annotations

from pop3_ingest.config import JOB_STALE_AFTER_SECONDS
from pop3_ingest.domain.job import Job
from pop3_ingest.domain.state import MailboxState

TICK = 1_800_000_000.0


def ran_at(when: float) -> MailboxState:
    return MailboxState(last_attempt=when)


def test_a_job_older_than_the_longest_interval_is_too_old() -> None:
    job = Job("pop3/a", TICK)
    assert not job.too_old(TICK)
    assert not job.too_old(TICK + JOB_STALE_AFTER_SECONDS)
    assert job.too_old(TICK + JOB_STALE_AFTER_SECONDS + 1)


def test_a_job_is_overtaken_only_by_a_run_that_started_after_its_tick() -> None:
    job = Job("pop3/a", TICK)
    assert not job.overtaken(MailboxState())  # never ran
    assert not job.overtaken(ran_at(TICK - 1))  # the previous tick's run
    assert job.overtaken(ran_at(TICK + 1))  # a run since: this tick's work is done


def test_a_job_without_a_tick_is_never_stale() -> None:
    job = Job("pop3/a")
    assert not job.too_old(TICK + 10 * JOB_STALE_AFTER_SECONDS)
    assert not job.overtaken(ran_at(TICK))
