"""Micro-batches: grouping, flushing, exactly-once output and reusable staging buffers."""

import threading
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchkafka.worker._errors import StartupError
from torchkafka.worker.pipeline import (
    Batch,
    BatchItem,
    BatchSizer,
    MicroBatcher,
    StagingPool,
    ladder,
)


def item(token: int, now: float = 0.0, shape=(2, 3), dtype=torch.float32) -> BatchItem[int]:
    tensor = torch.full(shape, token).to(dtype)
    return BatchItem(tensor, token, now)


def divisible_by(k: int) -> Callable[[int], bool]:
    return lambda token: token % k == 0


def tokens(batches: list[Batch[int]]) -> list[list[int]]:
    return [[i.token for i in batch.items] for batch in batches]


@pytest.fixture
def pool() -> StagingPool:
    return StagingPool(pin_memory=False)


def test_a_group_flushes_when_full() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=3, max_wait_s=1.0)
    assert batcher.add(item(1)) == []
    assert batcher.add(item(2)) == []
    assert len(batcher) == 2
    batches = batcher.add(item(3))
    assert tokens(batches) == [[1, 2, 3]]
    assert batches[0].capacity == 3
    assert len(batcher) == 0
    assert batcher.next_deadline() is None


def test_a_group_is_due_when_its_oldest_item_has_waited() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=0.5)
    batcher.add(item(1, now=10.0))
    batcher.add(item(2, now=10.3))
    assert batcher.next_deadline() == 10.5
    assert batcher.due(10.49) == []
    assert tokens(batcher.due(10.5)) == [[1, 2]]
    assert batcher.due(99.0) == []


def test_adding_returns_only_a_full_group_and_due_returns_the_rest() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=2, max_wait_s=0.5)
    batcher.add(item(1, now=0.0))
    assert batcher.add(item(2, now=0.7, shape=(4,))) == []  # group 1 is due, not returned
    assert tokens(batcher.add(item(3, now=0.7, shape=(4,)))) == [[2, 3]]
    assert tokens(batcher.due(0.7)) == [[1]]
    assert len(batcher) == 0


def test_zero_wait_makes_every_item_due_at_once() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=0.0)
    assert batcher.add(item(1, now=3.0)) == []
    assert batcher.next_deadline() == 3.0
    assert tokens(batcher.due(3.0)) == [[1]]


def test_shapes_and_dtypes_never_share_a_batch() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0)
    batcher.add(item(1, now=0.2))
    batcher.add(item(2, now=0.1, shape=(3, 2)))
    batcher.add(item(3, now=0.3, dtype=torch.float16))
    batcher.add(item(4, now=0.3))
    assert batcher.next_deadline() == pytest.approx(1.1)
    assert tokens(batcher.drain()) == [[2], [1, 4], [3]]  # oldest group first
    assert batcher.drain() == []


def test_without_a_wait_limit_groups_leave_only_when_full_or_drained() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=float("inf"))
    batcher.add(item(1))
    assert batcher.due(1e9) == []
    assert tokens(batcher.drain()) == [[1]]


def test_the_deadline_follows_the_oldest_item_not_the_first() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0)
    batcher.add(item(1, now=5.0))
    batcher.add(item(2, now=4.5))
    assert batcher.next_deadline() == 5.5
    assert [i.token for i in batcher.discard(lambda token: token == 2)] == [2]
    assert batcher.next_deadline() == 6.0


def test_discard_removes_matching_items_and_keeps_order() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0)
    for token in range(6):
        batcher.add(item(token, now=float(token), shape=(token % 2 + 1,)))
    removed = batcher.discard(lambda token: token in {0, 1, 3})
    assert [i.token for i in removed] == [0, 1, 3]
    assert len(batcher) == 3
    assert batcher.next_deadline() == 3.0  # item 2 is now the oldest
    assert tokens(batcher.drain()) == [[2, 4], [5]]


def test_a_lowered_batch_size_splits_larger_groups() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0)
    for token in range(5):
        batcher.add(item(token))
    batcher.max_batch_size = 2
    batches = batcher.add(item(5))
    assert tokens(batches) == [[0, 1], [2, 3], [4, 5]]
    assert {batch.capacity for batch in batches} == {2}
    with pytest.raises(ValueError, match="must be"):
        batcher.max_batch_size = 0


def test_a_group_leaves_before_its_bytes_would_pass_the_bound() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0, max_batch_bytes=100)
    row = (3, 2, 2)  # 12 uint8 bytes: 8 rows fit
    tiny = [batcher.add(item(t, shape=row, dtype=torch.uint8)) for t in range(8)]
    assert tokens(tiny[-1]) == [list(range(8))]
    big = (5, 5)  # 25 float32, 100 bytes: one a batch
    assert batcher.capacity((big, torch.float32)) == 1
    batches = batcher.add(item(8, shape=big))
    assert tokens(batches) == [[8]]
    assert batches[0].capacity == 1, "the staging buffer holds one such row, not max_batch_size"
    mid = (3, 3)  # 36 bytes: two a batch
    assert batcher.add(item(9, shape=mid)) == []
    assert [b.capacity for b in batcher.add(item(10, shape=mid))] == [2]


def test_an_input_over_the_byte_bound_runs_alone() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size=8, max_wait_s=1.0, max_batch_bytes=10)
    assert tokens(batcher.add(item(1, shape=(3, 4)))) == [[1]]
    assert batcher.capacity(((0, 4), torch.float32)) == 8  # empty rows cost nothing
    batcher.max_batch_size = 2
    assert batcher.capacity(((1,), torch.uint8)) == 2  # the lower of the two bounds
    with pytest.raises(ValueError, match="max_batch_bytes must be"):
        MicroBatcher(8, 1.0, max_batch_bytes=0)


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -0.1), (1, float("nan"))])
def test_bad_settings_are_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        MicroBatcher(size, wait)


def test_stack_fills_the_first_rows_of_a_capacity_sized_buffer(pool: StagingPool) -> None:
    batch = Batch((item(1), item(2)), capacity=4)
    stacked = batch.stack(pool)
    assert stacked.shape == (2, 2, 3)
    assert torch.equal(stacked, torch.stack([i.tensor for i in batch.items]))
    assert stacked.untyped_storage().nbytes() == 4 * 2 * 3 * 4
    assert stacked.is_contiguous()
    pool.release(stacked)


def test_the_same_buffer_serves_consecutive_batches(pool: StagingPool) -> None:
    first = Batch((item(1), item(2), item(3)), capacity=3).stack(pool)
    pointer = first.data_ptr()
    pool.release(first)
    second = Batch((item(4),), capacity=3).stack(pool)
    assert second.data_ptr() == pointer
    assert pool.allocations == 1
    assert torch.equal(second, item(4).tensor.unsqueeze(0))


def test_a_buffer_still_acquired_is_never_handed_out(pool: StagingPool) -> None:
    batch = Batch((item(1),), capacity=2)
    held = [batch.stack(pool) for _ in range(3)]
    assert len({tensor.data_ptr() for tensor in held}) == 3
    assert pool.in_use == 3
    for tensor in held:
        pool.release(tensor)
    again = [batch.stack(pool) for _ in range(3)]
    assert {t.data_ptr() for t in again} == {t.data_ptr() for t in held}
    assert pool.allocations == 3


def test_stack_pads_with_zero_rows_over_stale_data(pool: StagingPool) -> None:
    stale = pool.acquire((2, 3), torch.float32, 4)
    stale.fill_(float("nan"))
    pool.release(stale)
    padded = Batch((item(1), item(2)), capacity=4).stack(pool, rows=3)
    assert padded.data_ptr() == stale.data_ptr()
    assert padded.shape == (3, 2, 3)
    assert torch.equal(padded[:2], torch.stack([item(1).tensor, item(2).tensor]))
    assert torch.equal(padded[2], torch.zeros(2, 3))
    assert stale[3].isnan().all()  # only the pad rows are written
    pool.release(padded)


def test_a_bucket_beyond_the_capacity_gets_a_buffer_that_fits(pool: StagingPool) -> None:
    padded = Batch((item(1),), capacity=2).stack(pool, rows=8)
    assert padded.shape == (8, 2, 3)
    assert torch.equal(padded[1:], torch.zeros(7, 2, 3))
    pool.release(padded)
    with pytest.raises(ValueError, match="2 items do not fit in 1 rows"):
        Batch((item(1), item(2)), capacity=2).stack(pool, rows=1)
    assert pool.in_use == 0


def test_buffers_are_per_shape_dtype_and_capacity(pool: StagingPool) -> None:
    a = pool.acquire((2, 3), torch.float32, 4)
    pool.release(a)
    for shape, dtype, capacity in [((3, 2), torch.float32, 4), ((2, 3), torch.int64, 4)]:
        assert pool.acquire(shape, dtype, capacity).data_ptr() != a.data_ptr()
    assert pool.acquire((2, 3), torch.float32, 8).shape == (8, 2, 3)
    assert pool.allocations == 4


def test_releasing_twice_or_a_foreign_tensor_fails(pool: StagingPool) -> None:
    buffer = pool.acquire((4,), torch.uint8, 2)
    pool.release(buffer[1:])  # any view of the buffer returns it
    with pytest.raises(ValueError, match="did not hand out"):
        pool.release(buffer)
    with pytest.raises(ValueError, match="did not hand out"):
        pool.release(torch.zeros(2, 4, dtype=torch.uint8))


def test_empty_inputs_are_stacked_without_pooling(pool: StagingPool) -> None:
    batch = Batch((item(1, shape=(0, 3)), item(2, shape=(0, 3))), capacity=4)
    stacked = batch.stack(pool)
    assert stacked.shape == (2, 0, 3)
    pool.release(stacked)
    assert pool.allocations == pool.in_use == 0


def test_idle_buffers_beyond_the_limit_are_dropped_oldest_key_first() -> None:
    pool = StagingPool(pin_memory=False, max_idle_bytes=2 * 64)
    a, b, c = (pool.acquire((16,), torch.float32, 1) for _ in range(3))  # 64 bytes each
    d = pool.acquire((32,), torch.uint8, 2)  # 64 bytes
    for tensor in (a, b, c, d):
        pool.release(tensor)
    assert pool.acquire((32,), torch.uint8, 2).data_ptr() == d.data_ptr()
    assert pool.acquire((16,), torch.float32, 1).data_ptr() == c.data_ptr()
    assert pool.allocations == 4
    pool.acquire((16,), torch.float32, 1)  # a and b were dropped
    assert pool.allocations == 5


def test_a_failed_stack_gives_the_buffer_back(pool: StagingPool) -> None:
    broken = Batch((item(1), item(2, shape=(3, 2))), capacity=2)  # the batcher never mixes
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        broken.stack(pool)
    assert pool.in_use == 0
    pool.release(Batch((item(1), item(2)), capacity=2).stack(pool))
    assert pool.allocations == 1


def test_threads_never_share_a_buffer(pool: StagingPool) -> None:
    holders: dict[int, int] = {}
    clashes: list[int] = []
    lock = threading.Lock()

    def churn(name: int) -> None:
        for _ in range(300):
            buffer = pool.acquire((8,), torch.uint8, 4)
            with lock:
                if holders.setdefault(buffer.data_ptr(), name) != name:
                    clashes.append(buffer.data_ptr())
            with lock:
                del holders[buffer.data_ptr()]
            pool.release(buffer)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert clashes == []
    assert pool.in_use == 0
    assert pool.allocations <= len(threads)


def test_pinning_follows_cuda_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not StagingPool().pinned
    assert not StagingPool(pin_memory=False).pinned
    with pytest.raises(StartupError, match="need CUDA"):
        StagingPool(pin_memory=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffers_are_pinned_with_cuda() -> None:
    pool = StagingPool()
    assert pool.pinned
    stacked = Batch((item(1),), capacity=2).stack(pool, rows=2)
    assert stacked.is_pinned()
    pool.release(stacked)
    again = Batch((item(2),), capacity=2).stack(pool)
    assert again.data_ptr() == stacked.data_ptr()
    assert pool.allocations == 1
    pool.release(again)


SHAPES = [((2,), torch.float32), ((3,), torch.float32), ((2,), torch.int64), ((1, 2), torch.uint8)]

# Binary fractions: clock sums are exact, so deadlines often fall exactly on ``now``.
STEPS = st.sampled_from([0.0, 0.125, 0.25, 0.5])
add_op = st.tuples(st.just("add"), st.integers(0, len(SHAPES) - 1), STEPS)
due_op = st.tuples(st.just("due"), st.just(0), STEPS)
discard_op = st.tuples(st.just("discard"), st.integers(2, 5), st.just(0.0))
resize_op = st.tuples(st.just("resize"), st.integers(1, 5), st.just(0.0))


@settings(deadline=None, max_examples=300)
@given(
    max_batch_size=st.integers(1, 5),
    max_wait_s=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    max_batch_bytes=st.none() | st.integers(1, 40),
    ops=st.lists(st.one_of(add_op, add_op, add_op, due_op, discard_op, resize_op), max_size=60),
    adaptive=st.booleans(),
)
def test_every_item_comes_out_once_in_uniform_ordered_batches(
    max_batch_size: int,
    max_wait_s: float,
    max_batch_bytes: int | None,
    ops: list[tuple[str, int, float]],
    adaptive: bool,
) -> None:
    sizer = BatchSizer(ladder(max_batch_size)) if adaptive else None
    batcher: MicroBatcher[int] = MicroBatcher(max_batch_size, max_wait_s, max_batch_bytes, sizer)
    pool = StagingPool(pin_memory=False)
    added: dict[int, BatchItem[int]] = {}
    batches: list[Batch[int]] = []
    discarded: list[BatchItem[int]] = []

    def collect(flushed: list[Batch[int]]) -> list[Batch[int]]:
        for batch in flushed:
            first = batch.items[0].tensor
            capacity = batcher.capacity((tuple(first.shape), first.dtype))
            assert 1 <= len(batch) <= batch.capacity == capacity <= batcher.max_batch_size
            fits = max_batch_bytes is None or capacity * first.nbytes <= max_batch_bytes
            assert fits or capacity == 1
        batches.extend(flushed)
        return flushed

    now = 0.0
    for op, arg, step in ops:
        now += step
        if op == "add":
            shape, dtype = SHAPES[arg]
            new = BatchItem(torch.randint(0, 100, shape).to(dtype), len(added), now)
            added[new.token] = new
            collect(batcher.add(new))
        elif op == "due":
            oldest: dict[object, float] = {}
            for batch in collect(batcher.due(now)):
                key = (batch.items[0].tensor.shape, batch.items[0].tensor.dtype)
                oldest[key] = min(oldest.get(key, now), batch.items[0].enqueued_at)
            assert all(enqueued_at + max_wait_s <= now for enqueued_at in oldest.values())
            deadline = batcher.next_deadline()
            assert deadline is None or deadline > now
        elif op == "discard":
            removed = batcher.discard(divisible_by(arg))
            assert all(i.token % arg == 0 for i in removed)
            discarded += removed
        else:
            batcher.max_batch_size = arg
        assert len(batcher) + sum(map(len, batches)) + len(discarded) == len(added)
    collect(batcher.drain())
    assert len(batcher) == 0
    assert batcher.next_deadline() is None

    out = [i.token for b in batches for i in b.items] + [i.token for i in discarded]
    assert sorted(out) == list(added)
    per_key: dict[tuple[tuple[int, ...], torch.dtype], list[int]] = {}
    for batch in batches:
        keys = {(tuple(i.tensor.shape), i.tensor.dtype) for i in batch.items}
        assert len(keys) == 1
        per_key.setdefault(keys.pop(), []).extend(i.token for i in batch.items)
        stacked = batch.stack(pool)
        assert torch.equal(stacked, torch.stack([i.tensor for i in batch.items]))
        assert stacked.dtype == batch.items[0].tensor.dtype
        pool.release(stacked)
    assert all(sequence == sorted(sequence) for sequence in per_key.values())
    assert pool.allocations <= len(SHAPES) * 5  # one per key and capacity at most
