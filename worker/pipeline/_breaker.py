"""A circuit breaker: once a dependency has failed for good, stop paying its retries for a while.

Closed, calls go through with their retries. When one fails anyway, the
breaker opens for ``open_s``: calls fail at once, without touching the
dependency. Then it is half-open: the next call is tried once, without
retries; success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Tracks whether calls to one dependency should be tried, and how."""

    def __init__(self, open_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if open_s <= 0:
            raise ValueError(f"open_s must be > 0, got {open_s}")
        self._open_s = open_s
        self._clock = clock
        self._opened_at: float | None = None

    @property
    def open(self) -> bool:
        """Calls fail at once: the dependency failed less than ``open_s`` ago."""
        return self._opened_at is not None and self._clock() < self._opened_at + self._open_s

    @property
    def half_open(self) -> bool:
        """The next call is a single probe, without retries."""
        return self._opened_at is not None and not self.open

    def failed(self) -> None:
        """A call failed for good: open (again)."""
        self._opened_at = self._clock()

    def succeeded(self) -> None:
        """A call went through: close."""
        self._opened_at = None
