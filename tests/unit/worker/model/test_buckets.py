"""Batch buckets: normalised sizes, the bucket of a batch, the next smaller bucket."""

import pytest

from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import Buckets


def test_sizes_are_sorted_and_unique() -> None:
    buckets = Buckets([32, 1, 8, 8])
    assert buckets.sizes == (1, 8, 32)
    assert buckets.largest == 32
    assert repr(buckets) == "Buckets(1,8,32)"


@pytest.mark.parametrize("sizes", [[], [0, 8], [-1]])
def test_nonsense_is_refused(sizes: list[int]) -> None:
    with pytest.raises(StartupError, match="one or more sizes >= 1"):
        Buckets(sizes)


@pytest.mark.parametrize(
    ("count", "bucket"), [(1, 1), (2, 8), (7, 8), (8, 8), (9, 32), (31, 32), (32, 32)]
)
def test_a_batch_runs_in_the_smallest_bucket_that_holds_it(count: int, bucket: int) -> None:
    assert Buckets([1, 8, 32]).bucket_for(count) == bucket


@pytest.mark.parametrize("count", [0, 33])
def test_batches_outside_the_buckets_have_none(count: int) -> None:
    with pytest.raises(ValueError, match=f"a batch of {count} has no bucket"):
        Buckets([1, 8, 32]).bucket_for(count)


@pytest.mark.parametrize(("bucket", "below"), [(1, None), (4, None), (16, 4), (17, 16)])
def test_below_is_the_next_smaller_bucket(bucket: int, below: int | None) -> None:
    assert Buckets([4, 16]).below(bucket) == below
