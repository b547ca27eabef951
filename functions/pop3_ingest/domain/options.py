"""The core's tuning knobs for one run."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class IngestOptions:
    key_prefix: str = "mail/"
    delete: bool = True
    max_messages: int = 0  # 0: no cap
    max_message_size: int = 50 * MIB
    pipeline_window: int = 64
    upload_workers: int = 8
    # Downloaded messages waiting for their upload, counted by the bytes
    # actually held (a LIST size can lie).
    memory_budget: int = 32 * MIB
    # Bigger messages are spooled to a temporary file (Lambda's /tmp) while
    # they are hashed, so the digest is known before the object is written.
    stream_threshold: int = 8 * MIB
    spool_budget: int = 384 * MIB
    # A session is committed (QUIT, reconnect) after whichever comes first, so
    # a crash repeats at most that much work; each commit costs a reconnect.
    commit_every_messages: int = 1000
    commit_every_bytes: int = 256 * MIB
    commit_every_seconds: float = 60.0
    # Failures in a row (across runs) after which a message is quarantined.
    poison_threshold: int = 3
    # A listing at least this long may be a provider's partial view (Gmail
    # offers about 250 per session): it is not proof that a message is gone,
    # and draining it is followed by another session.
    capped_listing: int = 200
