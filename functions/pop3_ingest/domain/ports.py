"""The ports of the core: what it needs of the POP3 session, the message store and the queue.

One definition each; the adapters in ``pop3_ingest.pop3`` and ``pop3_ingest.integrations``
implement them, and the tests' in-memory fakes do too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from pop3_ingest.domain.message import Readable, ServerMessage, StoredObject
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.domain.summary import RunSummary

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


class StateSnapshot(Protocol):
    """A mailbox's state as last read or written: the base of the store's next write."""

    @property
    def state(self) -> MailboxState: ...

    @property
    def damaged(self) -> str | None:
        """Why the stored document was set aside and read as empty, if it was."""
        ...


SnapshotT = TypeVar("SnapshotT", bound=StateSnapshot)


class StateStore(Protocol[SnapshotT]):
    """What a run needs of the state store: its memory, its lease, its quarantine records."""

    def read(self, mailbox: str) -> SnapshotT: ...

    def take_lease(
        self, mailbox: str, owner: str, until: float, now: float, current: SnapshotT
    ) -> SnapshotT | None:
        """Claim the mailbox until ``until``; None when another live run holds it."""
        ...

    def write(self, mailbox: str, state: MailboxState, base: SnapshotT) -> SnapshotT:
        """Save ``state``, a changed copy of ``base.state``, merged over others' writes."""
        ...

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None: ...


class Core(Protocol):
    """The session engine as the run policy sees it (``MailboxIngest``)."""

    @property
    def login_delay(self) -> int:
        """Seconds the server asked for between logins; 0 when it asked for none."""
        ...

    def run(self) -> RunSummary: ...


class RunObserver(Protocol):
    """Where the run policy's metrics and log lines go.

    The policy calls ``log`` from one helper method only, so an observer that
    records where a line came from can skip that helper and name its caller.
    """

    def count(self, metric: str) -> None:
        """One more of ``metric`` (a count)."""
        ...

    def log(self, level: int, message: str, **fields: object) -> None: ...
