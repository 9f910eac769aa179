"""Batch-size buckets: the few batch sizes a static-shape model runs at.

Backends that compile for fixed shapes (TensorRT, CUDA graphs) run a batch of
``n`` at the smallest bucket that holds it, padded with zero rows. The
largest bucket is the largest batch: the worker's configuration requires it
to equal ``max_batch_size`` (``WorkerConfig`` checks), so every batch the
batcher forms has a bucket.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from torchkafka.worker._errors import StartupError


class Buckets:
    """Batch sizes, ascending and unique, each >= 1 (given in any order, repeats allowed)."""

    __slots__ = ("sizes",)

    def __init__(self, sizes: Iterable[int]) -> None:
        unique = sorted(set(sizes))
        if not unique or unique[0] < 1:
            raise StartupError(f"batch buckets must be one or more sizes >= 1, got {unique}")
        self.sizes: tuple[int, ...] = tuple(unique)

    def __repr__(self) -> str:
        return f"Buckets({','.join(map(str, self.sizes))})"

    @property
    def largest(self) -> int:
        """The largest batch a bucket holds."""
        return self.sizes[-1]

    def bucket_for(self, count: int) -> int:
        """The smallest bucket that holds ``count`` rows; ValueError beyond the largest."""
        if not 1 <= count <= self.largest:
            raise ValueError(f"a batch of {count} has no bucket in {self}")
        return self.sizes[bisect.bisect_left(self.sizes, count)]

    def below(self, bucket: int) -> int | None:
        """The largest bucket smaller than ``bucket``, or None when there is none."""
        index = bisect.bisect_left(self.sizes, bucket)
        return self.sizes[index - 1] if index else None
