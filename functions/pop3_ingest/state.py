"""What a mailbox's runs remember between invocations.

One small JSON document per mailbox, read once at the start of a run and
written once at the end: UIDLs already handled in keep-on-server mode,
deletions already committed (to spot servers whose DELE does not delete),
consecutive failures per message (poison detection), and the login/back-off
bookkeeping that keeps us from hammering an account into a lockout.
UIDLs are kept as digests: server text is never stored as a key.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_VERSION = 2
DELETED_MEMORY_SECONDS = 30 * 24 * 3600  # how long a committed deletion is remembered
_MAX_DELETED = 100_000


@dataclass
class Failure:
    count: int
    error: str
    first_at: float
    last_at: float


@dataclass
class MailboxState:
    # Announced messages: digest -> "<LIST size>:<sha256 prefix>", so a
    # server that reuses a UIDL for another message is noticed.
    seen: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    quarantined: dict[str, Failure] = field(default_factory=dict)
    auth_failures: int = 0
    auth_fingerprint: str | None = None
    busy_streak: int = 0
    backoff_until: float = 0.0
    last_attempt: float = 0.0
    last_completed: float = 0.0

    # -- messages -------------------------------------------------------------

    def record_failure(self, digest: str, error: str, threshold: int, now: float) -> bool:
        """Count one more failure in a row; True when the message is now quarantined."""
        entry = self.failures.get(digest)
        if entry is None:
            entry = self.failures[digest] = Failure(0, error, now, now)
        entry.count += 1
        entry.error = error[:500]
        entry.last_at = now
        if threshold and entry.count >= threshold:
            self.quarantined[digest] = self.failures.pop(digest)
            return True
        return False

    def record_success(self, digest: str) -> None:
        self.failures.pop(digest, None)

    def release(self, digest: str) -> bool:
        """An operator lets a quarantined message be tried again."""
        return self.quarantined.pop(digest, None) is not None

    def forget_absent(self, present: set[str], now: float) -> None:
        """Drop what no longer applies: messages gone from the server, old deletions."""
        for table in (self.seen, self.failures, self.quarantined):
            for digest in [d for d in table if d not in present]:
                del table[digest]
        cutoff = now - DELETED_MEMORY_SECONDS
        for digest in [d for d, at in self.deleted.items() if at < cutoff]:
            del self.deleted[digest]
        if len(self.deleted) > _MAX_DELETED:
            newest = sorted(self.deleted.items(), key=lambda item: item[1])[-_MAX_DELETED:]
            self.deleted = dict(newest)

    # -- serialisation ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MailboxState:
        if data.get("version") != STATE_VERSION:
            return cls()  # unknown layout: start afresh rather than misread it
        return cls(
            seen={str(k): str(v) for k, v in data.get("seen", {}).items()},
            deleted={str(k): float(v) for k, v in data.get("deleted", {}).items()},
            failures={str(k): Failure(**v) for k, v in data.get("failures", {}).items()},
            quarantined={str(k): Failure(**v) for k, v in data.get("quarantined", {}).items()},
            auth_failures=int(data.get("auth_failures", 0)),
            auth_fingerprint=data.get("auth_fingerprint"),
            busy_streak=int(data.get("busy_streak", 0)),
            backoff_until=float(data.get("backoff_until", 0.0)),
            last_attempt=float(data.get("last_attempt", 0.0)),
            last_completed=float(data.get("last_completed", 0.0)),
        )


def now() -> float:
    return time.time()
