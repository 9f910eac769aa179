"""Adaptive batch sizes: large batches while records wait, small ones once caught up.

The batcher closes a batch at ``BatchSizer.size`` inputs, or sooner when its
wait ends. The size moves along a ladder of sizes (the batch buckets, or the
powers of two up to ``max_batch_size``):

- up one rung each time a batch closes full: records were waiting for it, so
  a larger batch costs none of them a wait, and amortises the per-batch work
  (the model call, the Redis calls, the produce) over more of them;
- down one rung each time a batch leaves on its timer at most half full
  while the source has caught up (the last poll took fewer records than it
  asked for): the first records of the next burst are answered sooner from
  a small batch. Behind a backlog, a batch that leaves on its timer (the
  polling thread took longer than the wait) holds the size.

With a latency target, the size climbs only to a rung whose model time
(measured and smoothed; before that rung has run, the rung below's scaled by
the sizes) is known to be within the target. So a worker behind its backlog runs its largest
batches, within the target, and a caught-up one runs small ones.

``closed`` is called by the batcher (the polling thread), ``ran`` by the
inference thread: each writes what it alone writes (the size; the times), and
single reads and writes of them are atomic in CPython.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

#: Weight of the newest measurement in a rung's smoothed model time.
SMOOTHING = 0.3


def ladder(ceiling: int, buckets: Sequence[int] = ()) -> tuple[int, ...]:
    """The sizes a batch may have: ``buckets`` if given, else powers of two and ``ceiling``."""
    if ceiling < 1:
        raise ValueError(f"the largest batch must be >= 1, got {ceiling}")
    if buckets:
        return tuple(sorted({size for size in buckets if size <= ceiling} | {ceiling}))
    sizes = {1 << power for power in range(ceiling.bit_length()) if 1 << power <= ceiling}
    return tuple(sorted(sizes | {ceiling}))


class BatchSizer:
    """The size at which the next batch closes, adapted to the backlog and the model's time."""

    def __init__(self, sizes: Sequence[int], latency_target_s: float | None = None) -> None:
        """``sizes``: the ladder, ascending; it starts at the smallest."""
        if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
            raise ValueError(f"sizes must be ascending, unique and >= 1, got {list(sizes)}")
        if latency_target_s is not None and not latency_target_s > 0:
            raise ValueError(f"latency_target_s must be > 0, got {latency_target_s}")
        self._sizes = tuple(sizes)
        self._latency_target_s = latency_target_s
        self._rung = 0
        #: Records are waiting at the source (the last poll came back full): no step down.
        self.behind = False
        self._top = len(sizes) - 1  # the highest rung allowed (lowered by ``limit``)
        self._seconds: dict[int, float] = {}  # smoothed model time per rung

    @property
    def size(self) -> int:
        """The size at which the next batch closes."""
        return self._sizes[self._rung]

    def limit(self, largest: int) -> None:
        """No batch larger than ``largest`` from now on (after running out of device memory)."""
        self._top = max(0, bisect.bisect_right(self._sizes, largest) - 1)
        self._rung = min(self._rung, self._top)

    def closed(self, items: int, full: bool) -> None:
        """A batch of ``items`` closed: ``full`` at the size, else on its timer."""
        if full:
            if self._rung < self._top and self._fits(self._rung + 1):
                self._rung += 1
        elif self._rung > 0 and items * 2 <= self.size and not self.behind:
            self._rung -= 1

    def ran(self, items: int, seconds: float) -> None:
        """The model took ``seconds`` on a batch of ``items``."""
        rung = min(bisect.bisect_left(self._sizes, items), len(self._sizes) - 1)
        before = self._seconds.get(rung)
        self._seconds[rung] = seconds if before is None else before + SMOOTHING * (seconds - before)

    def predicted_s(self, size: int) -> float | None:
        """The model time expected for a batch of ladder size ``size``; None before any ran."""
        rung = self._sizes.index(size)
        if rung in self._seconds:
            return self._seconds[rung]
        below = self._seconds.get(rung - 1) if rung else None
        return None if below is None else below * size / self._sizes[rung - 1]

    def _fits(self, rung: int) -> bool:
        if self._latency_target_s is None:
            return True
        predicted = self.predicted_s(self._sizes[rung])
        return predicted is not None and predicted <= self._latency_target_s
