"""In-memory stand-ins for the core's ports: a POP3 mailbox, a store, a queue."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pop3_ingest.domain.message import ServerMessage, StoredObject
from pop3_ingest.errors import AnnounceError, ConnectionLost, ProtocolError, StoreError


class FakeStream:
    def __init__(self, data: bytes, cut_after: int | None = None) -> None:
        self._buf = io.BytesIO(data)
        self._cut_after = cut_after
        self._read = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        if self._cut_after is not None:
            if self._read >= self._cut_after:
                raise ConnectionLost("connection reset by peer")
            size = min(size if size >= 0 else 1 << 30, self._cut_after - self._read)
        chunk = self._buf.read(size)
        self._read += len(chunk)
        if self._buf.tell() == len(self._buf.getvalue()):
            self.finished = True
        return chunk

    def read_all(self) -> bytes:
        out = b""
        while not self.finished:
            out += self.read(1 << 20)
        return out

    def drain(self) -> None:
        self.read_all()


@dataclass
class FakeMailbox:
    """A POP3 server and its session: DELE only marks; a clean QUIT commits.

    Commands are queued as written and answered in order, as over a socket,
    so pipelining rules are enforced: without PIPELINING a second command
    before the first answer is a protocol violation.
    """

    messages: dict[str, bytes]
    pipelining: bool = True
    login_delay: int = 0
    refuse_retr: set[str] = field(default_factory=set)
    cut_retr: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    marked: set[str] = field(default_factory=set)
    sessions: int = 0
    max_in_flight: int = 0
    quit_ok: bool | None = None
    _queue: deque[str] = field(default_factory=deque)
    _numbers: dict[int, str] = field(default_factory=dict)
    _broken: bool = False

    def __enter__(self) -> FakeMailbox:
        self.sessions += 1
        self._broken = False
        self.quit_ok = None
        self._queue.clear()
        self.marked.clear()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broken or self._queue:
            self.quit_ok = False  # socket closed: the server forgets the marks
            self.marked.clear()
            return
        for uidl in self.marked:
            del self.messages[uidl]
        self.marked.clear()
        self.quit_ok = True
        self.log.append("QUIT")

    def abandon(self) -> None:
        self._broken = True
        self.log.append("ABANDON")

    def list_messages(self) -> list[ServerMessage]:
        self._numbers = dict(enumerate(self.messages, start=1))
        return [
            ServerMessage(number=n, uidl=uidl, size=len(self.messages[uidl]))
            for n, uidl in self._numbers.items()
        ]

    def send_commands(self, commands: list[str]) -> None:
        if not self.pipelining and (len(commands) > 1 or self._queue):
            raise AssertionError("pipelined without PIPELINING")
        self._queue.extend(commands)
        self.max_in_flight = max(self.max_in_flight, len(self._queue))

    def _next(self, verb: str, message: ServerMessage) -> str:
        command = self._queue.popleft()
        assert command == f"{verb} {message.number}", (command, verb, message.number)
        uidl = self._numbers[message.number]
        self.log.append(f"{verb} {uidl}")
        return uidl

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> FakeStream:
        uidl = self._next("RETR", message)
        if uidl in self.refuse_retr:
            raise ProtocolError("-ERR no such message")
        if uidl in self.cut_retr:
            self._broken = True
            self._queue.clear()
        return FakeStream(self.messages[uidl], self.cut_retr.get(uidl))

    def read_dele(self, message: ServerMessage) -> None:
        uidl = self._next("DELE", message)
        self.marked.add(uidl)


class SharedUidlListing(FakeMailbox):
    """A server whose UIDLs do not tell its messages apart (popa3d without X-Delivery-ID)."""

    def list_messages(self) -> list[ServerMessage]:
        return [
            ServerMessage(number=m.number, uidl="same", size=m.size, unique=False)
            for m in super().list_messages()
        ]


@dataclass
class FakeStore:
    bucket: str = "bucket"
    objects: dict[str, bytes] = field(default_factory=dict)
    fail_when_containing: set[bytes] = field(default_factory=set)
    log: list[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        return self._put(key, data)

    def put_file(
        self,
        key: str,
        path: str,
        sha256_hex: str,
        metadata: dict[str, str],
        cancelled: Callable[[], bool],
    ) -> bool:
        with open(path, "rb") as spooled:
            return self._put(key, spooled.read())

    def _put(self, key: str, data: bytes) -> bool:
        if any(marker in data for marker in self.fail_when_containing):
            raise StoreError("S3 said no")
        with self._lock:
            if self.log is not None:
                self.log.append(f"PUT {key}")
            if key in self.objects:
                return False
            self.objects[key] = data
            return True

    def stored_object(self, key: str) -> StoredObject | None:
        if key not in self.objects:
            return None
        data = self.objects[key]
        return StoredObject(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@dataclass
class FakeQueue:
    sent: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False
    log: list[str] | None = None
    batches: int = 0

    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        assert 0 < len(pointers) <= 10
        if self.failing:
            raise AnnounceError("SQS unavailable")
        self.batches += 1
        for pointer in pointers:
            if self.log is not None:
                self.log.append(f"SEND {pointer['uidl']}")
            self.sent.append(pointer)
        return set()
