"""A fleet job: one mailbox to run, and the tick of its schedule that asked for it.

EventBridge Scheduler sends one job per mailbox and tick to the FIFO jobs
queue. A job is stale when running it would repeat work already done or about
to be done: dropped unread when a newer tick has surely been scheduled, and
before logging in when the mailbox's state shows a run started after the tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from pop3_ingest.config import JOB_STALE_AFTER_SECONDS
from pop3_ingest.domain.state import MailboxState


@dataclass(frozen=True)
class Job:
    secret_id: str
    # The tick's time (epoch seconds); None for a job sent by hand: never stale.
    scheduled_at: float | None = None

    def too_old(self, now: float) -> bool:
        """Scheduled longer ago than any mailbox's interval: a newer tick takes over."""
        return self.scheduled_at is not None and now - self.scheduled_at > JOB_STALE_AFTER_SECONDS

    def overtaken(self, state: MailboxState) -> bool:
        """A run of this mailbox started after the tick: it did what this job asks."""
        return self.scheduled_at is not None and state.last_attempt > self.scheduled_at
