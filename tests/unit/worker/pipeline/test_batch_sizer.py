"""Adaptive batch sizes: up while batches close full, down once caught up, within a target."""

import pytest
import torch

from torchkafka.worker.app import batch_sizer
from torchkafka.worker.config import BatchingSettings, ModelSettings
from torchkafka.worker.pipeline import Batch, BatchItem, BatchSizer, MicroBatcher, ladder


def item(token: int, now: float = 0.0) -> BatchItem[int]:
    return BatchItem(torch.zeros(2), token, now)


def sizes_of(batches: list[Batch[int]]) -> list[int]:
    return [len(batch) for batch in batches]


@pytest.mark.parametrize(
    ("ceiling", "buckets", "expected"),
    [
        (1, (), (1,)),
        (8, (), (1, 2, 4, 8)),
        (48, (), (1, 2, 4, 8, 16, 32, 48)),
        (32, (32, 1, 8), (1, 8, 32)),
    ],
)
def test_the_ladder_is_the_buckets_or_powers_of_two_up_to_the_ceiling(
    ceiling: int, buckets: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    assert ladder(ceiling, buckets) == expected


def test_full_batches_climb_to_the_ceiling_and_no_further() -> None:
    sizer = BatchSizer(ladder(8))
    seen = [sizer.size]
    for _ in range(5):
        sizer.closed(sizer.size, full=True)
        seen.append(sizer.size)
    assert seen == [1, 2, 4, 8, 8, 8]


def test_a_batch_leaving_on_its_timer_at_most_half_full_steps_down() -> None:
    sizer = BatchSizer(ladder(8))
    for _ in range(3):
        sizer.closed(sizer.size, full=True)
    sizer.closed(5, full=False)  # more than half: the backlog is not gone yet
    assert sizer.size == 8
    sizer.closed(4, full=False)
    assert sizer.size == 4
    for _ in range(4):
        sizer.closed(1, full=False)
    assert sizer.size == 1


def test_with_a_latency_target_it_climbs_only_to_sizes_known_to_fit() -> None:
    sizer = BatchSizer(ladder(16), latency_target_s=0.010)
    sizer.closed(1, full=True)
    assert sizer.size == 1  # nothing has run: the time of a batch of 2 is unknown
    sizer.ran(1, 0.002)
    assert sizer.predicted_s(2) == pytest.approx(0.004)  # scaled from the rung below
    sizer.closed(1, full=True)
    sizer.ran(2, 0.003)
    sizer.closed(2, full=True)
    assert sizer.size == 4  # 0.006 predicted from the batches of 2
    sizer.ran(4, 0.009)
    sizer.closed(4, full=True)
    assert sizer.size == 4  # 0.018 predicted for 8: over the target
    sizer.ran(4, 0.004)  # faster now: smoothed, 0.009 + 0.3 * (0.004 - 0.009)
    assert sizer.predicted_s(4) == pytest.approx(0.0075)
    assert sizer.predicted_s(8) == pytest.approx(0.015)
    assert sizer.size == 4


def test_a_measured_time_over_the_target_holds_the_size_below_it() -> None:
    sizer = BatchSizer((1, 2, 4), latency_target_s=0.010)
    sizer.ran(1, 0.001)
    sizer.ran(2, 0.050)  # measured: beats the scaled estimate
    sizer.closed(1, full=True)
    assert sizer.size == 1


def test_a_lowered_limit_caps_the_size_and_a_raised_one_restores_the_ladder() -> None:
    sizer = BatchSizer(ladder(8))
    for _ in range(3):
        sizer.closed(sizer.size, full=True)
    sizer.limit(5)
    assert sizer.size == 4
    sizer.closed(4, full=True)
    assert sizer.size == 4
    sizer.limit(8)
    sizer.closed(4, full=True)
    assert sizer.size == 8


@pytest.mark.parametrize(
    ("sizes", "target"), [((), None), ((2, 1), None), ((0, 1), None), ((1, 2), 0.0)]
)
def test_bad_ladders_and_targets_are_refused(sizes: tuple[int, ...], target: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        BatchSizer(sizes, target)


def test_a_burst_in_the_batcher_leaves_in_growing_batches_then_small_ones() -> None:
    sizer = BatchSizer(ladder(8))
    batcher: MicroBatcher[int] = MicroBatcher(8, max_wait_s=0.5, sizer=sizer)
    batches = [batch for token in range(23) for batch in batcher.add(item(token))]
    assert sizes_of(batches) == [1, 2, 4, 8, 8]
    assert {batch.capacity for batch in batches} == {8}  # one staging buffer size
    assert [i.token for batch in batches for i in batch.items] == list(range(23))
    assert len(batcher) == 0
    batcher.add(item(23, 1.0))
    assert sizes_of(batcher.due(1.5)) == [1]
    assert sizer.size == 4


def test_a_lowered_max_batch_size_lowers_the_sizer_too() -> None:
    sizer = BatchSizer(ladder(8))
    batcher: MicroBatcher[int] = MicroBatcher(8, max_wait_s=0.5, sizer=sizer)
    for token in range(15):
        batcher.add(item(token))
    batcher.max_batch_size = 3
    assert sizer.size == 2
    assert max(sizes_of(batcher.add(item(99)) + batcher.drain())) <= 3


def test_the_settings_choose_the_sizer() -> None:
    model = ModelSettings(spec="python:m:f", max_batch_size=32, batch_buckets=(1, 8, 32))
    assert batch_sizer(BatchingSettings(batch_sizing="fixed"), model) is None
    sizer = batch_sizer(BatchingSettings(latency_target_ms=20.0), model)
    assert sizer is not None
    assert sizer.size == 1
    sizer.ran(1, 0.015)
    assert sizer.predicted_s(8) == pytest.approx(0.12)  # buckets are its ladder: 1, 8, 32
    sizer.closed(1, full=True)
    assert sizer.size == 1  # 120 ms predicted against a 20 ms target


def test_behind_a_backlog_a_batch_leaving_on_its_timer_holds_the_size() -> None:
    sizer = BatchSizer(ladder(8))
    batcher: MicroBatcher[int] = MicroBatcher(8, max_wait_s=0.5, sizer=sizer)
    for token in range(7):
        batcher.add(item(token))
    assert sizer.size == 8
    batcher.source_behind(True)  # the last poll came back full: more records wait
    batcher.add(item(7, 1.0))
    assert sizes_of(batcher.due(1.5)) == [1]
    assert sizer.size == 8
    batcher.source_behind(False)
    batcher.add(item(8, 2.0))
    assert sizes_of(batcher.due(2.5)) == [1]
    assert sizer.size == 4
