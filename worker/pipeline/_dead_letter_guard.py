"""Stops a worker that dead-letters too much, instead of draining a stream into the DLQ.

The guard counts each outcome before it is published (``GuardedPublisher``),
so the dead letter that passes a limit is never produced and its offset is
never committed: a restarted worker, with the bad deploy fixed, processes it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from torchkafka.worker._errors import DeadLetterLimitExceeded
from torchkafka.worker.pipeline._deliveries import Publisher, ResultMessage
from torchkafka.worker.pipeline._records import Record


class DeadLetterGuard:
    """Counts outcomes; raises once dead letters pass a ratio or a consecutive run.

    ``max_ratio`` applies to the last ``window`` outcomes, and only once that
    many have been seen, so a single early bad message does not stop a worker.
    Safe to call from several threads.
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
        self._lock = threading.Lock()

    def record(self, dead_lettered: bool) -> None:
        """Count one message's outcome; raise ``DeadLetterLimitExceeded`` past a limit."""
        with self._lock:
            self._record(dead_lettered)

    def record_results(self, n: int) -> None:
        """Count ``n`` results (no limit is passed by a result)."""
        with self._lock:
            for _ in range(n):
                self._record(False)

    def _record(self, dead_lettered: bool) -> None:
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


class GuardedPublisher:
    """A ``Publisher`` that counts every outcome on ``guard`` before publishing it."""

    def __init__(self, publisher: Publisher, guard: DeadLetterGuard) -> None:
        self._publisher = publisher
        self._guard = guard

    def results(self, results: Sequence[ResultMessage]) -> None:
        """Count the results, then publish them."""
        self._guard.record_results(len(results))
        self._publisher.results(results)

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        """Count a dead letter or a retry (raising past a limit, unpublished), then publish it."""
        self._guard.record(dead_lettered=True)
        self._publisher.dead_letter(record, reason, error, request_id, attempts, topic)
