"""Progress of a long command on stderr: only for a person at a terminal.

With ``--json``, or when stderr is a pipe or a file, nothing is written: a
monitoring job's output stays exactly the document or the lines it parses.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pop3_ingest_cli.render import PROG

# At most this many updates over a whole count (plus the last): a terminal
# keeps up, and a million items do not cost a million writes.
_UPDATES = 200


class Progress:
    """``pop3-ingest status: reading states 120/1000`` on one line, rewritten in place."""

    def __init__(self, command: str, *, as_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.command = command
        self.enabled = not as_json and _is_terminal(self.stream)
        self.shown = False
        self._last = -1

    def note(self, text: str) -> None:
        """A step without a count (listing, resolving)."""
        self._write(text)

    def step(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total``: written when it moved enough to show, and at the end."""
        if not self.enabled:
            return
        every = max(1, total // _UPDATES)
        if done == total or done - self._last >= every:
            self._last = done
            self._write(f"{what} {done}/{total}")

    def clear(self) -> None:
        """Clear the line for other output; the next step writes it again."""
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
            self._last = -1

    def done(self) -> None:
        """Clear the line, so what follows starts at the left."""
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
        self._last = -1

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(f"\r\x1b[K{PROG} {self.command}: {text}")
        self.stream.flush()
        self.shown = True


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
