"""The command window: RETR and DELE in flight on one session, answers read in order.

To be bounded by the line rather than by round trips, commands are pipelined
(RFC 2449 PIPELINING) in a bounded window: DELEs first, then RETRs while the
session admits more and memory allows. Answers come back in the order the
commands went out. A retrieved message is held in memory, or spooled to a
temporary file when big, until its upload is done; sends and reads wait while
the bytes held are over budget. Nothing here knows where the bytes go.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Literal, Protocol

from pop3_ingest.config import MIB
from pop3_ingest.domain.message import HEADER_LIMIT, CapturingReader, ServerMessage
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.ports import Mailbox, MessageStream
from pop3_ingest.errors import ProtocolError

logger = logging.getLogger(__name__)

Command = Literal["RETR", "DELE"]


@dataclass
class Download:
    """A retrieved message: its exact bytes (in memory or spooled) and digest."""

    message: ServerMessage
    sha256: str
    size: int
    head: bytes
    data: bytes | None = None
    spool: IO[bytes] | None = None

    def close(self) -> None:
        if self.spool is not None:
            with suppress(OSError):
                self.spool.close()


class Buffers:
    """Bytes of retrieved messages awaiting their upload: in memory, and spooled.

    Counted in bytes actually held, so a server that lists messages as 0 bytes
    cannot make the run hold more than the budget plus one message.
    """

    def __init__(self) -> None:
        self.held = 0
        self.spooled = 0

    def release(self, download: Download) -> None:
        """Its upload is done (or given up): the bytes are let go."""
        if download.spool is not None:
            self.spooled -= download.size
        else:
            self.held -= download.size
        download.close()


def receive(
    message: ServerMessage, stream: MessageStream, stream_threshold: int, buffers: Buffers
) -> Download:
    """RETR's whole answer, hashed: in memory, or spooled when bigger than ``stream_threshold``."""
    if message.size > stream_threshold:
        return _spool(message, stream, buffers)
    data = stream.read_all()
    buffers.held += len(data)
    return Download(message, hashlib.sha256(data).hexdigest(), len(data), data[:HEADER_LIMIT], data)


def _spool(message: ServerMessage, stream: MessageStream, buffers: Buffers) -> Download:
    reader = CapturingReader(stream)
    # Named, so the store can read it by path (in parallel, and again for a
    # second key); removed when closed.
    spool = tempfile.NamedTemporaryFile(prefix="pop3-ingest-")  # noqa: SIM115  # Download.close
    try:
        while chunk := reader.read(MIB):
            spool.write(chunk)
        spool.flush()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    buffers.spooled += reader.size
    return Download(message, reader.sha256, reader.size, reader.head, spool=spool)


class Gate(Protocol):
    """The session's say over each RETR the window would send."""

    def admit(self, message: ServerMessage) -> bool:
        """False: take no more in this session (the session records why)."""
        ...

    def took(self, message: ServerMessage) -> None:
        """Its RETR is written."""
        ...


class CommandWindow:
    """RETRs and DELEs written ahead of their answers, at most ``size`` in flight."""

    def __init__(
        self, mailbox: Mailbox, size: int, options: IngestOptions, buffers: Buffers
    ) -> None:
        self._mailbox = mailbox
        self._options = options
        self._buffers = buffers
        self.size = size
        self._outstanding: deque[tuple[Command, ServerMessage]] = deque()
        self._to_fetch: deque[ServerMessage] = deque()
        self._to_delete: deque[tuple[ServerMessage, str]] = deque()
        # Message number -> the digest that proved it, for each DELE in flight.
        self._dele_digests: dict[int, str] = {}
        # Messages retried one at a time, read as mail whatever their first line.
        self._retry_alone: frozenset[int] = frozenset()
        self.fetching = True
        self.line_up = True  # False once the connection is lost or dropped
        self._deleting = True  # False once no DELE of this session can count
        self.sent_retr = 0
        self.sent_bytes = 0

    # -- what is queued -----------------------------------------------------------

    def load(self, to_fetch: Iterable[ServerMessage], retry_alone: Iterable[int] = ()) -> None:
        """The session's RETRs, in order. ``retry_alone``: message numbers read as
        mail whatever their first line, if exactly their LIST size arrives; while
        there are any, one command at a time, so such a first line can be told
        from an answer out of step."""
        self._to_fetch.extend(to_fetch)
        self._retry_alone = frozenset(retry_alone)
        if self._retry_alone:
            self.size = 1

    def queue_delete(self, message: ServerMessage, sha256: str) -> None:
        """``message`` is proven stored (``sha256``): its DELE goes out next."""
        if self._deleting and self.line_up:
            self._to_delete.append((message, sha256))

    @property
    def deletes_waiting(self) -> bool:
        return bool(self._to_delete)

    def stop_fetching(self) -> None:
        self.fetching = False

    def void_deletes(self) -> None:
        """The session will not QUIT: its DELEs would not count, so none is sent."""
        self.fetching = False
        self._deleting = False
        self._to_delete.clear()  # void without QUIT; the next session proves them again

    def hang_up(self) -> None:
        """The line is dropped: nothing more is written or read."""
        self.line_up = False

    def lose_line(self) -> list[ServerMessage]:
        """The connection is lost: the messages whose RETR was never answered."""
        self.line_up = False
        self.fetching = False
        self._to_delete.clear()
        unread = [message for kind, message in self._outstanding if kind == "RETR"]
        self._outstanding.clear()
        return unread

    # -- writing commands -----------------------------------------------------------

    def send(self, gate: Gate) -> None:
        """Fill the window: DELEs first (they free the server's memory of what is
        done), then RETRs while the gate admits them and memory allows."""
        if not self.line_up:
            return
        commands: list[str] = []
        while self._to_delete and self._room() and self._deleting:
            message, sha256 = self._to_delete.popleft()
            commands.append(f"DELE {message.number}")
            self._outstanding.append(("DELE", message))
            self._dele_digests[message.number] = sha256
        while self.fetching and self._to_fetch and self._room():
            message = self._to_fetch[0]
            if not gate.admit(message):
                break
            if self._over_memory(message):
                break  # wait for answers and uploads to free memory
            self._to_fetch.popleft()
            commands.append(f"RETR {message.number}")
            self._outstanding.append(("RETR", message))
            self.sent_retr += 1
            self.sent_bytes += message.size
            gate.took(message)
        if commands:
            self._mailbox.send_commands(commands)

    def _room(self) -> bool:
        return len(self._outstanding) < self.size

    def _over_memory(self, message: ServerMessage) -> bool:
        threshold = self._options.stream_threshold
        in_flight = self._buffers.held + sum(
            min(m.size, threshold) for kind, m in self._outstanding if kind == "RETR"
        )
        size = min(message.size, threshold)
        return in_flight + size > self._options.memory_budget and bool(
            in_flight or self._buffers.held
        )

    def retrs_in_flight(self) -> tuple[int, int]:
        """RETRs written and not yet answered: how many, and their listed bytes."""
        retrs = [m for kind, m in self._outstanding if kind == "RETR"]
        return len(retrs), sum(m.size for m in retrs)

    # -- reading answers ------------------------------------------------------------

    def must_wait_before_reading(self, uploads_running: bool) -> bool:
        """Hold back reading the next message while memory or disk is full
        (only while uploads run that will free it)."""
        kind, message = self._outstanding[0]
        if kind != "RETR" or not uploads_running:
            return False
        if message.size > self._options.stream_threshold:
            return self._buffers.spooled + message.size > self._options.spool_budget
        return self._buffers.held >= self._options.memory_budget

    @property
    def answers_due(self) -> bool:
        return bool(self._outstanding)

    def next_answer(self) -> tuple[Command, ServerMessage]:
        """The command whose answer comes next."""
        return self._outstanding.popleft()

    def read_dele(self, message: ServerMessage) -> str | None:
        """DELE's answer: the digest that proved the message, or None if refused."""
        sha256 = self._dele_digests.pop(message.number)
        try:
            self._mailbox.read_dele(message)
        except ProtocolError as exc:
            logger.warning("DELE refused; message stays", extra={"error": str(exc)})
            return None
        return sha256

    def read_retr(self, message: ServerMessage) -> MessageStream:
        """RETR's answer, to be read to its end before the next."""
        alone = message.number in self._retry_alone
        return self._mailbox.read_retr(message, exact_size=alone)
