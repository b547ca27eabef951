"""In-memory stand-ins for the core's ports: a mailbox, a store, a queue."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from pop3_ingest.errors import AnnounceError, ConnectionLost, ProtocolError, StoreError
from pop3_ingest.message import Readable
from pop3_ingest.pop3 import ServerMessage


class FakeStream:
    def __init__(self, data: bytes, cut_after: int | None = None) -> None:
        self._buf = io.BytesIO(data)
        self._cut_after = cut_after
        self._read = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        if self._cut_after is not None and self._read >= self._cut_after:
            self.finished = True
            raise ConnectionLost("connection reset by peer")
        if self._cut_after is not None:
            size = min(size if size >= 0 else 1 << 30, self._cut_after - self._read)
        chunk = self._buf.read(size)
        self._read += len(chunk)
        if not chunk:
            self.finished = True
        return chunk

    def drain(self) -> None:
        while not self.finished:
            self.read(65536)


@dataclass
class FakeMailbox:
    """A POP3 mailbox: DELE only marks; ``commit`` plays QUIT."""

    messages: dict[str, bytes]
    refuse_retr: set[str] = field(default_factory=set)
    cut_retr: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    marked: set[str] = field(default_factory=set)

    def list_messages(self) -> list[ServerMessage]:
        return [
            ServerMessage(number=i, uidl=uidl, size=len(body))
            for i, (uidl, body) in enumerate(self.messages.items(), start=1)
        ]

    def retrieve(self, message: ServerMessage) -> FakeStream:
        self.log.append(f"RETR {message.uidl}")
        if message.uidl in self.refuse_retr:
            raise ProtocolError("-ERR no such message")
        return FakeStream(self.messages[message.uidl], self.cut_retr.get(message.uidl))

    def delete(self, message: ServerMessage) -> None:
        self.log.append(f"DELE {message.uidl}")
        self.marked.add(message.uidl)

    def commit(self) -> None:
        for uidl in self.marked:
            del self.messages[uidl]
        self.marked.clear()


@dataclass
class FakeStore:
    bucket: str = "bucket"
    objects: dict[str, bytes] = field(default_factory=dict)
    fail_keys_containing: set[bytes] = field(default_factory=set)
    log: list[str] | None = None

    def store(self, key: str, body: Readable, metadata: dict[str, str]) -> bool:
        data = b""
        while chunk := body.read(7):  # small reads: exercise streaming
            data += chunk
        if any(marker in data for marker in self.fail_keys_containing):
            raise StoreError("S3 said no")
        if self.log is not None:
            self.log.append(f"PUT {key}")
        if key in self.objects:
            return False
        self.objects[key] = data
        return True

    def stored_size(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None


@dataclass
class FakeQueue:
    sent: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False
    log: list[str] | None = None

    def announce(self, pointer: dict[str, Any]) -> None:
        if self.failing:
            raise AnnounceError("SQS unavailable")
        if self.log is not None:
            self.log.append(f"SEND {pointer['uidl']}")
        self.sent.append(pointer)
