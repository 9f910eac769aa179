"""Parked work: admitted records whose ids another worker holds (or Redis was away).

Parked records are gated again, all together, on a timer. The timer starts
when the first record is parked and restarts only after each retry, so a
steady trickle of newly parked records cannot postpone the retry of the old
ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torchkafka.worker.pipeline._records import Admitted


class Parking:
    """Holds parked records until their retry is due."""

    def __init__(self, retry_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._retry_s = retry_s
        self._clock = clock
        self._parked: list[Admitted] = []
        self._due = 0.0

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, admitted: list[Admitted]) -> None:
        """Hold ``admitted`` for the next retry (the timer starts if none is running)."""
        if admitted and not self._parked:
            self._due = self._clock() + self._retry_s
        self._parked += admitted

    def due(self) -> list[Admitted]:
        """Every parked record, once the retry is due; else nothing."""
        if not self._parked or self._clock() < self._due:
            return []
        return self.take(lambda _: True)

    def take(self, predicate: Callable[[Admitted], bool]) -> list[Admitted]:
        """Remove and return the parked records that match ``predicate``."""
        taken = [a for a in self._parked if predicate(a)]
        self._parked = [a for a in self._parked if not predicate(a)]
        return taken
