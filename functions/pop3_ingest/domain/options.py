"""The core's tuning knobs for one run; every default comes from :mod:`pop3_ingest.config`."""

from __future__ import annotations

from dataclasses import dataclass, fields

from pop3_ingest.config import (
    DEFAULT_CAPPED_LISTING,
    DEFAULT_COMMIT_EVERY_BYTES,
    DEFAULT_COMMIT_EVERY_MESSAGES,
    DEFAULT_COMMIT_EVERY_SECONDS,
    DEFAULT_DELETE,
    DEFAULT_DELETE_AFTER_DAYS,
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_PIPELINE_WINDOW,
    DEFAULT_POISON_THRESHOLD,
    DEFAULT_SPOOL_BUDGET,
    DEFAULT_START,
    DEFAULT_STREAM_THRESHOLD,
    DEFAULT_UPLOAD_WORKERS,
    MailboxConfig,
    Settings,
    Start,
)
from pop3_ingest.domain.message import ServerMessage

__all__ = ["IngestOptions"]


@dataclass(frozen=True)
class IngestOptions:
    """What :class:`pop3_ingest.domain.ingest.MailboxIngest` may do in one run.

    The meaning of each knob is given where its default is (pop3_ingest.config).
    """

    key_prefix: str = DEFAULT_KEY_PREFIX
    delete: bool = DEFAULT_DELETE
    delete_after_days: int = DEFAULT_DELETE_AFTER_DAYS
    start: Start = DEFAULT_START
    # 0: the core caps nothing; a function run is capped by MAX_MESSAGES_PER_RUN.
    max_messages: int = 0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    pipeline_window: int = DEFAULT_PIPELINE_WINDOW
    upload_workers: int = DEFAULT_UPLOAD_WORKERS
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    stream_threshold: int = DEFAULT_STREAM_THRESHOLD
    spool_budget: int = DEFAULT_SPOOL_BUDGET
    commit_every_messages: int = DEFAULT_COMMIT_EVERY_MESSAGES
    commit_every_bytes: int = DEFAULT_COMMIT_EVERY_BYTES
    commit_every_seconds: float = DEFAULT_COMMIT_EVERY_SECONDS
    poison_threshold: int = DEFAULT_POISON_THRESHOLD
    capped_listing: int = DEFAULT_CAPPED_LISTING

    @classmethod
    def from_settings(cls, settings: Settings, config: MailboxConfig) -> IngestOptions:
        """The options of one function run: each setting of the same name, the run's
        message cap, and the mailbox secret's own choices (delete, delete_after_days,
        start, max_message_size)."""
        shared = {
            f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)
        }
        return cls(
            **shared,
            max_messages=settings.max_messages_per_run,
            delete=config.delete,
            delete_after_days=config.delete_after_days,
            start=config.start,
            max_message_size=config.max_message_size,
        )

    def deletes_when_stored(self, message: ServerMessage) -> bool:
        """Whether ``message`` is deleted as soon as it is stored and announced.

        With ``delete_after_days`` a message is kept that long and deleted on a
        later proof (domain/plan.py), if it has a unique UIDL to be remembered
        by; one without is deleted once stored, as it cannot be told apart later.
        """
        return self.delete and (not self.delete_after_days or not message.unique)
