"""How a run ended and what it did: the run's report, before metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class StopReason(StrEnum):
    COMPLETED = "completed"
    DEADLINE = "deadline"
    MESSAGE_CAP = "message_cap"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    CONNECTION_LOST = "connection_lost"
    BUSY = "busy"
    BACKOFF = "backoff"
    NOT_DUE = "not_due"
    AUTH_SUSPENDED = "auth_suspended"
    # Another run holds this mailbox's lease (at most one run per mailbox).
    LOCKED = "locked"
    # Work is left that needs another login, and the server asked for a pause
    # between logins (RFC 2449 LOGIN-DELAY): the next run does it.
    LOGIN_DELAY = "login_delay"
    # Session after session had to end without QUIT (messages that fail to be
    # stored or announced): the run stops rather than log in again and again.
    REPEATED_FAILURES = "repeated_failures"
    # The secret is still the template's placeholder: nothing to log in to yet.
    NOT_CONFIGURED = "not_configured"


@dataclass
class RunSummary:
    mailbox: str
    messages_on_server: int = 0
    stored: int = 0
    already_stored: int = 0
    announced: int = 0
    deleted: int = 0  # committed by a successful QUIT
    failed: int = 0
    oversized: int = 0
    quarantined: int = 0  # newly quarantined in this run
    in_quarantine: int = 0  # on the server and skipped because quarantined
    reappeared: int = 0  # deleted before, listed again, proven the same by digest: not re-announced
    redeleted: int = 0  # announced before, proven by digest and deleted without a new pointer
    unlisted: int = 0  # listing entries that cannot be fetched safely: left on the server
    bytes_stored: int = 0
    sessions: int = 0
    abandoned_sessions: int = 0  # ended without QUIT so nothing unconfirmed was popped
    stopped: StopReason = StopReason.COMPLETED
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def left_on_server(self) -> int:
        return max(0, self.messages_on_server - self.deleted)
