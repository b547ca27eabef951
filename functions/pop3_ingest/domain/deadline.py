"""The run's clock: when to stop taking mail, and when to cut everything off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Deadline:
    """Decides whether there is time to take one more message and still finish.

    ``seconds_left`` counts down to the soft deadline (``margin_seconds``
    before the Lambda is stopped): no new message is taken past it. Half the
    margin later comes the hard cut-off: the session is dropped and uploads
    abandoned, and the other half is left for saving the state.

    The estimate learns the line's throughput and the store's latency as the
    run goes, so work is not started that cannot finish before the deadline.
    """

    remaining_ms: Callable[[], int]
    margin_seconds: float
    bytes_per_second: float = 1_000_000.0
    upload_seconds: float = 0.2

    def seconds_left(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin_seconds

    def seconds_to_cutoff(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin_seconds / 2

    def cut_off(self) -> bool:
        return self.seconds_to_cutoff() <= 0

    def allows(self, size: int, queued: int = 0, workers: int = 1) -> bool:
        expected = size / self.bytes_per_second + (queued + 1) * self.upload_seconds / workers
        return self.seconds_left() > expected

    def observe(self, size: int, seconds: float) -> None:
        if size >= 256 * 1024 and seconds > 0:
            # Exponential average: one slow message does not dominate.
            self.bytes_per_second = 0.7 * self.bytes_per_second + 0.3 * (size / seconds)

    def observe_upload(self, seconds: float) -> None:
        self.upload_seconds = 0.7 * self.upload_seconds + 0.3 * seconds
