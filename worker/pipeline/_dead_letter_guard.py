"""Stops a worker that dead-letters too much, instead of draining a stream into the DLQ."""

from __future__ import annotations

from collections import deque

from torchkafka.worker._errors import DeadLetterLimitExceeded


class DeadLetterGuard:
    """Counts outcomes; raises once dead letters pass a ratio or a consecutive run.

    ``max_ratio`` applies to the last ``window`` outcomes, and only once that
    many have been seen, so a single early bad message does not stop a worker.
    """

    def __init__(self, max_ratio: float, window: int, max_consecutive: int) -> None:
        if not 0 < max_ratio <= 1:
            raise ValueError(f"max_ratio must be in (0, 1], got {max_ratio}")
        if window < 1 or max_consecutive < 1:
            raise ValueError("window and max_consecutive must be >= 1")
        self._max_ratio = max_ratio
        self._max_consecutive = max_consecutive
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._dead_in_window = 0
        self._consecutive = 0

    def record(self, dead_lettered: bool) -> None:
        """Count one message's outcome; raise ``DeadLetterLimitExceeded`` past a limit."""
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._dead_in_window -= 1
        self._outcomes.append(dead_lettered)
        self._dead_in_window += dead_lettered
        self._consecutive = self._consecutive + 1 if dead_lettered else 0
        if self._consecutive > self._max_consecutive:
            raise DeadLetterLimitExceeded(
                f"{self._consecutive} dead letters in a row (limit {self._max_consecutive})"
            )
        full = len(self._outcomes) == self._outcomes.maxlen
        if full and self._dead_in_window / len(self._outcomes) > self._max_ratio:
            raise DeadLetterLimitExceeded(
                f"{self._dead_in_window} of the last {len(self._outcomes)} messages were "
                f"dead-lettered (limit {self._max_ratio:.0%})"
            )
