"""Backpressure: how much to take per poll, and when the loop pauses its partitions.

A full inference queue is absorbed by taking fewer records per poll, and
none while the intake is full: the records wait in the consumer's prefetch,
which a pause would drop (they would be fetched again). Only a full intake
that lasts (a long batch, records parked behind other workers' claims)
pauses the partitions. Redis away pauses at once: nothing can be admitted or
settled until it answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class PauseReason(StrEnum):
    """Why the loop pauses its partitions."""

    BACKLOG = "intake full"
    REDIS = "redis"


def intake_limit(poll_batch: int, capacity: int, backlog: int) -> int:
    """Records to take now: what fits in ``capacity`` beside ``backlog`` (0: the intake is full)."""
    return max(0, min(poll_batch, capacity - backlog))


class Backpressure:
    """Decides, step by step, whether the partitions should be paused and why."""

    def __init__(self, pause_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._pause_after_s = pause_after_s
        self._clock = clock
        self._backlogged_since: float | None = None

    def reason(self, backlogged: bool, redis_away: bool) -> PauseReason | None:
        """The reason to be paused now, or None to run; call it once per step.

        ``backlogged``: the intake is full.
        """
        if not backlogged:
            self._backlogged_since = None
        elif self._backlogged_since is None:
            self._backlogged_since = self._clock()
        if redis_away:
            return PauseReason.REDIS
        lasting = self._backlogged_since is not None and (
            self._clock() - self._backlogged_since > self._pause_after_s
        )
        return PauseReason.BACKLOG if lasting else None
