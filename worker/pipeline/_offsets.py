"""Per-partition commit watermark: commit only what is acknowledged, contiguously.

Pure and single-owner: no Kafka, no threads. Every operation is amortised O(1)
(``committable`` is O(partitions that advanced)).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Partition:
    tracked: deque[int] = field(default_factory=deque)  # ascending; from the oldest in flight
    in_flight: set[int] = field(default_factory=set)  # tracked and not acked
    last_tracked: int = -1
    commit: int | None = None  # the commit point, once the oldest tracked offset is acked


class OffsetTracker(Generic[K]):
    """Tracks consumed offsets per partition and how far each may be committed.

    The commit point of a partition is one past the highest offset that, with
    every tracked offset below it, is acknowledged (Kafka's "next offset to
    read"). Offsets never tracked (transaction markers, compacted records) are
    gaps that do not hold it back.

    If late acknowledgements from an earlier assignment of a partition can
    arrive after it is assigned again, include the assignment's generation in
    the partition key so they cannot acknowledge the new assignment's offsets.
    """

    def __init__(self) -> None:
        self._partitions: dict[K, _Partition] = {}
        self._advanced: dict[K, int] = {}  # commit points not yet returned

    def track(self, partition: K, offset: int) -> None:
        """Record a consumed message; offsets of a partition must increase."""
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        elif offset <= state.last_tracked:
            raise ValueError(
                f"offset {offset} of {partition!r} is not above the last tracked, "
                f"{state.last_tracked}"
            )
        state.tracked.append(offset)
        state.in_flight.add(offset)
        state.last_tracked = offset

    def ack(self, partition: K, offset: int) -> bool:
        """Mark a message's result (or dead letter) acknowledged; in any order.

        Returns False, changing nothing, when ``offset`` is not in flight: its
        partition was revoked, or it was never tracked or is already acked.
        """
        state = self._partitions.get(partition)
        if state is None or offset not in state.in_flight:
            return False
        state.in_flight.remove(offset)
        tracked = state.tracked
        if tracked[0] != offset:
            return True
        # The head was the oldest in flight: pass it and the acked offsets behind it.
        passed = tracked.popleft()
        while tracked and tracked[0] not in state.in_flight:
            passed = tracked.popleft()
        state.commit = self._advanced[partition] = passed + 1
        return True

    def committable(self) -> dict[K, int]:
        """The new commit point of each partition that advanced since the last call."""
        advanced, self._advanced = self._advanced, {}
        return advanced

    def revoke(self, partitions: Iterable[K]) -> dict[K, int]:
        """Forget ``partitions``; return the final commit point of those that have one.

        The result includes points already returned by ``committable``:
        committing one twice is harmless, missing one on a rebalance is not.
        """
        final: dict[K, int] = {}
        for key in partitions:
            state = self._partitions.pop(key, None)
            self._advanced.pop(key, None)
            if state is not None and state.commit is not None:
                final[key] = state.commit
        return final

    def pending(self, partition: K) -> int:
        """Messages of ``partition`` tracked and not yet acknowledged."""
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.in_flight)
