"""The core: drain one mailbox under the delete-after-store rule.

For each message, in server order: RETR, store the exact bytes, announce a
pointer, and only then DELE. QUIT (done by the session's context manager)
commits the deletions. Anything that goes wrong with one message leaves that
message on the server and the run moves on; anything that breaks the
session ends the run, and the server then forgets every DELE of it, so a
crash can cost a re-download but never a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pop3_ingest.errors import AnnounceError, ConnectionLost, ProtocolError, StoreError
from pop3_ingest.message import CapturingReader, Readable, StoredMessage, object_key
from pop3_ingest.pop3 import ServerMessage

logger = logging.getLogger(__name__)


# -- ports --------------------------------------------------------------------


class MessageStream(Readable, Protocol):
    @property
    def finished(self) -> bool: ...

    def drain(self) -> None: ...


class Mailbox(Protocol):
    """The POP3 session as the core sees it."""

    def list_messages(self) -> list[ServerMessage]: ...

    def retrieve(self, message: ServerMessage) -> MessageStream: ...

    def delete(self, message: ServerMessage) -> None: ...


class MessageStore(Protocol):
    bucket: str

    def store(self, key: str, body: Readable, metadata: dict[str, str]) -> bool:
        """Write ``body`` under ``key`` unless it exists; True if this call created it."""
        ...

    def stored_size(self, key: str) -> int | None:
        """Size of the object under ``key``, None if there is none."""
        ...


class Announcer(Protocol):
    def announce(self, pointer: dict[str, Any]) -> None: ...


# -- run policy ----------------------------------------------------------------


class StopReason(StrEnum):
    COMPLETED = "completed"
    DEADLINE = "deadline"
    MESSAGE_CAP = "message_cap"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    CONNECTION_LOST = "connection_lost"
    BUSY = "busy"


@dataclass
class Deadline:
    """Decides whether there is time to take one more message and still QUIT.

    The estimate learns the session's throughput as it goes, so a big message
    is not started when it cannot finish before the Lambda is stopped.
    """

    remaining_ms: Callable[[], int]
    margin_seconds: float
    bytes_per_second: float = 1_000_000.0
    seconds_per_message: float = 0.2

    def seconds_left(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin_seconds

    def allows(self, size: int) -> bool:
        expected = self.seconds_per_message + size / self.bytes_per_second
        return self.seconds_left() > expected

    def observe(self, size: int, seconds: float) -> None:
        # Exponential averages; a single slow message does not dominate.
        if size >= 256 * 1024 and seconds > 0:
            self.bytes_per_second = 0.7 * self.bytes_per_second + 0.3 * (size / seconds)
        else:
            self.seconds_per_message = 0.7 * self.seconds_per_message + 0.3 * seconds


@dataclass
class RunSummary:
    mailbox: str
    messages_on_server: int = 0
    stored: int = 0
    already_stored: int = 0
    announced: int = 0
    deleted: int = 0
    failed: int = 0
    bytes_stored: int = 0
    stopped: StopReason = StopReason.COMPLETED
    failures: list[dict[str, str]] = field(default_factory=list)

    def left_on_server(self, deletions_committed: bool) -> int:
        return self.messages_on_server - (self.deleted if deletions_committed else 0)


# -- the run -------------------------------------------------------------------

# After this many pointers in a row fail, the queue is down, not the message.
_QUEUE_FAILURE_LIMIT = 2


@dataclass
class MailboxIngest:
    mailbox_name: str
    mailbox: Mailbox
    store: MessageStore
    announcer: Announcer
    key_prefix: str
    delete: bool
    deadline: Deadline
    max_messages: int = 0
    clock: Callable[[], float] = time.monotonic

    def run(self) -> RunSummary:
        summary = RunSummary(mailbox=self.mailbox_name)
        messages = self.mailbox.list_messages()
        summary.messages_on_server = len(messages)
        seen_uidls: set[str] = set()
        queue_failures = 0
        taken = 0
        for message in messages:
            if self.max_messages and taken >= self.max_messages:
                summary.stopped = StopReason.MESSAGE_CAP
                break
            if not self.deadline.allows(message.size):
                summary.stopped = StopReason.DEADLINE
                break
            if message.uidl in seen_uidls:
                # Two messages with one UIDL would share a key; the second one
                # waits for the next session, where it is no longer a twin.
                self._fail(summary, message, "duplicate UIDL in listing; left for next run")
                continue
            seen_uidls.add(message.uidl)
            taken += 1
            started = self.clock()
            try:
                stored = self._store(message)
            except ConnectionLost as exc:
                self._fail(summary, message, str(exc))
                summary.stopped = StopReason.CONNECTION_LOST
                break
            except (StoreError, ProtocolError) as exc:
                self._fail(summary, message, str(exc))
                continue
            if stored is None:
                continue
            new, record = stored
            summary.bytes_stored += record.size if new else 0
            if new:
                summary.stored += 1
            else:
                summary.already_stored += 1
            try:
                self.announcer.announce(record.pointer())
            except AnnounceError as exc:
                self._fail(summary, message, str(exc))
                queue_failures += 1
                if queue_failures >= _QUEUE_FAILURE_LIMIT:
                    summary.stopped = StopReason.QUEUE_UNAVAILABLE
                    break
                continue
            queue_failures = 0
            summary.announced += 1
            self.deadline.observe(record.size, self.clock() - started)
            if not self.delete:
                continue
            try:
                self.mailbox.delete(message)
            except ConnectionLost as exc:
                # Nothing lost: the message is stored and announced; it comes
                # back next run and is recognised as already stored.
                logger.warning("DELE failed: %s", exc, extra={"uidl_key": record.key})
                summary.stopped = StopReason.CONNECTION_LOST
                break
            except ProtocolError as exc:
                logger.warning("DELE refused: %s", exc, extra={"uidl_key": record.key})
                continue
            summary.deleted += 1
        return summary

    def _store(self, message: ServerMessage) -> tuple[bool, StoredMessage] | None:
        key = object_key(self.key_prefix, self.mailbox_name, message.uidl)
        new, record = self._retrieve_into(message, key)
        if new or self.store.stored_size(key) == record.size:
            return new, record
        # The key is taken by different bytes: the server reused a UIDL. Keep
        # both, under a key that also names this content.
        alt_key = f"{key.removesuffix('.eml')}.{record.sha256[:16]}.eml"
        logger.warning(
            "UIDL reused with different content; storing under an alternate key",
            extra={"key": key, "alternate_key": alt_key},
        )
        new_alt, alt_record = self._retrieve_into(message, alt_key)
        if not new_alt and self.store.stored_size(alt_key) != alt_record.size:
            raise StoreError(f"both {key} and {alt_key} hold other content; left on server")
        return new_alt, alt_record

    def _retrieve_into(self, message: ServerMessage, key: str) -> tuple[bool, StoredMessage]:
        stream = self.mailbox.retrieve(message)
        reader = CapturingReader(stream)
        try:
            new = self.store.store(
                key,
                reader,
                {"mailbox": self.mailbox_name, "uidl-sha256": key.rsplit("/", 1)[-1][:40]},
            )
        except StoreError:
            if not stream.finished:
                stream.drain()  # keep the session in step for the next message
            raise
        if not stream.finished:
            # The store stopped reading early; never trust a partial copy.
            stream.drain()
            raise StoreError(f"store returned before the end of message {message.number}")
        return new, StoredMessage(
            bucket=self.store.bucket,
            key=key,
            size=reader.size,
            sha256=reader.sha256,
            mailbox=self.mailbox_name,
            uidl=message.uidl,
            headers=reader.header_fields(),
            stored_at=datetime.now(UTC),
        )

    def _fail(self, summary: RunSummary, message: ServerMessage, reason: str) -> None:
        summary.failed += 1
        if len(summary.failures) < 20:
            summary.failures.append({"number": str(message.number), "error": reason[:300]})
        logger.error(
            "message left on server",
            extra={"message_number": message.number, "size": message.size, "error": reason},
        )
