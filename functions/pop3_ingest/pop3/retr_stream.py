"""Reading one RETR answer as a stream: the message's exact bytes, never past a bound.

RETR is read straight from the connection's buffered reader, one bounded
block at a time, without any line-length limit (real mail has lines longer
than poplib's 2048 bytes) and never past ``allowed_size(LIST size)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from pop3_ingest.errors import ConnectionLost, MessageTooLarge, Pop3Error, SessionOutOfStep
from pop3_ingest.pop3.limits import READ_BLOCK

# What an answer's first line looks like; no message starts so.
STATUS_LINE = re.compile(rb"(\+OK|-ERR)( |\r?\n|$)")


def allowed_size(listed_size: int) -> int:
    """How far a message may outgrow its LIST size before we stop reading.

    Servers count octets differently (LF vs CRLF), so some slack is fair; an
    unbounded stream is not.
    """
    return listed_size + listed_size // 4 + 1024 * 1024


class PeekableSource(Protocol):
    """What RetrStream reads from: a buffered reader (the client's socket reader)."""

    def peek(self, size: int = 0, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


class RetrStream:
    """File-like reader over one multi-line RETR response.

    Yields the message's exact bytes: the terminating ``.`` line removed,
    dot-stuffing undone, every line ending CRLF. Reads are exact (``read(n)``
    returns n bytes unless the message ends), as boto3's managed upload of a
    non-seekable stream expects.

    Decoding works on whole buffered blocks with ``bytes`` operations rather
    than line by line, and consumes exactly up to the terminator, so the next
    pipelined response stays in the buffer for whoever reads it.
    """

    def __init__(
        self,
        source: PeekableSource,
        max_bytes: int,
        on_finish: Callable[[bool], None],
        *,
        exact: bool = False,
    ) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._on_finish = on_finish
        # Exactly max_bytes must arrive (see Pop3Mailbox.read_retr).
        self._exact = exact
        self._pending = bytearray()
        self._carry = bytearray()  # a line whose end has not arrived yet
        self._at_line_start = True
        self._done = False
        self.bytes_out = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._pull()
        if size < 0 or size >= len(self._pending):
            out = bytes(self._pending)
            self._pending.clear()
        else:
            out = bytes(self._pending[:size])
            del self._pending[:size]
        return out

    def read_all(self) -> bytes:
        return self.read(-1)

    def drain(self) -> None:
        """Consume the rest of the response so the session stays usable."""
        while not self._done:
            self._pull()
            self._pending.clear()

    @property
    def finished(self) -> bool:
        return self._done

    def _pull(self) -> None:
        try:
            block = self._source.peek(READ_BLOCK)
        except Pop3Error:  # too slow (the clock ran out)
            self._fail()
            raise
        except (OSError, ValueError) as exc:
            self._fail()
            raise ConnectionLost(f"connection lost during RETR: {exc}") from exc
        if not block:
            self._fail()
            raise ConnectionLost("server closed the connection in the middle of RETR")
        last_lf = block.rfind(b"\n")
        if last_lf < 0:
            self._consume(len(block))
            self._carry += block
            if len(self._carry) > READ_BLOCK:
                self._flush_partial_line()
            return
        lines = bytes(self._carry) + block[: last_lf + 1]
        carried = len(self._carry)
        self._carry.clear()
        end, after = self._find_terminator(lines)
        if end < 0:
            self._consume(last_lf + 1)
            self._emit(lines, self._at_line_start)
            self._at_line_start = True
            return
        self._consume(after - carried)
        self._emit(lines[:end], self._at_line_start)
        if self._exact and self.bytes_out != self._max_bytes:
            self._fail()
            raise SessionOutOfStep(
                f"message of {self.bytes_out} bytes where exactly {self._max_bytes} were listed"
            )
        self._done = True
        self._on_finish(True)

    def _find_terminator(self, lines: bytes) -> tuple[int, int]:
        """Start of the lone-dot line and the index just past it, or (-1, -1)."""
        if self._at_line_start:
            for term in (b".\r\n", b".\n"):
                if lines.startswith(term):
                    return 0, len(term)
        best = (-1, -1)
        for term in (b"\n.\r\n", b"\n.\n"):
            i = lines.find(term)
            if i >= 0 and (best[0] < 0 or i + 1 < best[0]):
                best = (i + 1, i + len(term))
        return best

    def _flush_partial_line(self) -> None:
        # A line longer than a buffer: pass its start on. Keep a trailing CR
        # back so a CRLF split across blocks is not mistaken for a bare LF.
        keep = 1 if self._carry.endswith(b"\r") else 0
        part = bytes(self._carry[: len(self._carry) - keep])
        del self._carry[: len(part)]
        self._emit(part, self._at_line_start)
        self._at_line_start = False

    def _emit(self, data: bytes, starts_line: bool) -> None:
        if starts_line and data.startswith(b"."):
            data = data[1:]
        data = data.replace(b"\n.", b"\n")  # undo dot-stuffing
        if data.count(b"\n") != data.count(b"\r\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.bytes_out += len(data)
        if self.bytes_out > self._max_bytes:
            self._fail()
            raise MessageTooLarge(
                f"message exceeded {self._max_bytes} bytes, more than its listed size allows"
            )
        self._pending += data

    def _consume(self, count: int) -> None:
        try:
            self._source.read(count)
        except Pop3Error:
            self._fail()
            raise
        except (OSError, ValueError) as exc:
            self._fail()
            raise ConnectionLost(f"connection lost during RETR: {exc}") from exc

    def _fail(self) -> None:
        self._done = True
        self._pending.clear()
        self._carry.clear()
        self._on_finish(False)
