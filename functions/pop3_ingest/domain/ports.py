"""The ports of the core: what it needs of the POP3 session, the message store and the queue.

One definition each; the adapters in ``pop3_ingest.pop3`` and ``pop3_ingest.integrations``
implement them, and the tests' in-memory fakes do too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from pop3_ingest.domain.message import Readable, ServerMessage, StoredObject

# SendMessageBatch takes at most this many entries.
SQS_BATCH_SIZE = 10


class MessageStream(Readable, Protocol):
    @property
    def finished(self) -> bool: ...

    def read_all(self) -> bytes: ...

    def drain(self) -> None: ...


class Mailbox(Protocol):
    """The POP3 session as the core sees it: commands written, answers read in order."""

    @property
    def pipelining(self) -> bool: ...

    def list_messages(self) -> list[ServerMessage]: ...

    def send_commands(self, commands: list[str]) -> None: ...

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> MessageStream:
        """``exact_size``: a first line like a status line is mail, if exactly the
        LIST size arrives (for messages retried alone)."""
        ...

    def read_dele(self, message: ServerMessage) -> None: ...


class Session(Mailbox, AbstractContextManager["Session"], Protocol):
    """A mailbox whose ``with`` block ends in QUIT; ``quit_ok`` says if it committed."""

    @property
    def quit_ok(self) -> bool | None: ...

    def abandon(self) -> None:
        """End the session without QUIT: the server forgets its DELEs."""
        ...

    @property
    def login_delay(self) -> int:
        """Seconds the server wants between logins (RFC 2449 LOGIN-DELAY)."""
        ...


class MessageStore(Protocol):
    bucket: str

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        """Write unless the key exists; True if this call created the object."""
        ...

    def put_file(
        self,
        key: str,
        path: str,
        sha256_hex: str,
        metadata: dict[str, str],
        cancelled: Callable[[], bool],
    ) -> bool:
        """Like put_bytes for a big message spooled to the file at ``path``; gives up
        (StoreError, upload aborted) as soon as ``cancelled()`` is true."""
        ...

    def stored_object(self, key: str) -> StoredObject | None: ...


class Announcer(Protocol):
    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        """Send up to SQS_BATCH_SIZE pointers; the indexes that failed."""
        ...
