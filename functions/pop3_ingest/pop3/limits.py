"""How long a POP3 answer may take, as a whole, and how much of it one read takes.

poplib's socket timeout bounds one read, not an answer: a server that sends a
byte a second would keep it waiting for ever. Here every answer gets an
:class:`AnswerClock`: a command's answer POP3_TIMEOUT_SECONDS, a message or
listing max(POP3_TIMEOUT_SECONDS, size / MIN_TRANSFER_BYTES_PER_SECOND), and
none of them past the run's own cut-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pop3_ingest.config import DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
from pop3_ingest.errors import ConnectError, TransferTooSlow

# One read from the socket; also the most a single over-long line can cost us.
READ_BLOCK = 64 * 1024


@dataclass
class AnswerClock:
    """How long the answer being read may take, as a whole.

    ``timeout`` alone for a command's answer; with ``min_rate`` the allowance
    grows with the size, ``max(timeout, max(expected, received) / min_rate)``,
    for messages and listings. ``stop_at`` (a ``time.monotonic()`` value) cuts
    any answer off when the run's own time is up. Reads add to ``received``.
    """

    what: str
    timeout: float
    min_rate: float = 0.0
    expected: int = 0
    stop_at: float | None = None
    started: float = field(default_factory=time.monotonic)
    received: int = 0

    def _limit(self) -> float:
        allowance = self.timeout
        if self.min_rate > 0:
            allowance = max(allowance, max(self.expected, self.received) / self.min_rate)
        return self.started + allowance

    def deadline(self) -> float:
        limit = self._limit()
        return limit if self.stop_at is None else min(limit, self.stop_at)

    def expired(self) -> TransferTooSlow:
        elapsed = time.monotonic() - self.started
        if self.stop_at is not None and self.stop_at < self._limit():
            return TransferTooSlow(
                f"{self.what}: cut off, the run is out of time "
                f"({self.received} bytes in {elapsed:.1f} s)"
            )
        if self.min_rate > 0:
            return TransferTooSlow(
                f"{self.what}: server too slow, {self.received} bytes in {elapsed:.1f} s "
                f"(allowed: POP3_TIMEOUT_SECONDS={self.timeout:g} s, or longer at "
                f"MIN_TRANSFER_BYTES_PER_SECOND={self.min_rate:g})"
            )
        return TransferTooSlow(
            f"{self.what}: no complete answer within POP3_TIMEOUT_SECONDS={self.timeout:g} s "
            f"({self.received} bytes)"
        )


@dataclass(frozen=True)
class TransferLimits:
    """The time limits of one session (see :class:`AnswerClock`)."""

    timeout: float
    min_rate: float = DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
    # Seconds left before reads must give up whatever they are reading.
    time_left: Callable[[], float] | None = None
    # TCP connect and TLS handshake, each (CONNECT_TIMEOUT_SECONDS); None: ``timeout``.
    connect_timeout: float | None = None

    @property
    def connect_limit(self) -> float:
        """How long one connect step may take when the run has time enough."""
        return self.timeout if self.connect_timeout is None else self.connect_timeout

    def clock(self, what: str, *, size: int | None = None) -> AnswerClock:
        """A command's answer (``size`` None) or a message/listing of ``size`` bytes."""
        stop_at = None if self.time_left is None else time.monotonic() + self.time_left()
        if size is None:
            return AnswerClock(what, self.timeout, stop_at=stop_at)
        return AnswerClock(
            what, self.timeout, min_rate=self.min_rate, expected=size, stop_at=stop_at
        )

    def connect_wait(self, where: str) -> float:
        """How long the next connect step may take: its limit, or less if the run ends first."""
        if self.time_left is None:
            return self.connect_limit
        left = self.time_left()
        if left <= 0:
            raise ConnectError(f"no time left to connect to {where}: the run's cut-off is reached")
        return min(self.connect_limit, left)
