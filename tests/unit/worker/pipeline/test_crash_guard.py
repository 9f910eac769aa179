"""The crash-loop guard, over the in-memory run log (no Redis): marks as batches are queued,
screening on the inference thread.

A worker process's lifetime is an ``InferenceWorker`` with a ``CrashGuard`` of
its own (its own run id); one that "dies" is left holding its batch in the
model (``StopsAt``) while the next lifetime starts on the same run log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from structlog.testing import capture_logs
from torch import nn

from tests.support import tiny_models
from tests.support.fakes import MemoryDedup, MemoryOutbox
from tests.support.runtimes import WAIT_S, make_runtime
from torchkafka.codecs import Request
from torchkafka.worker import TransientError, WorkerError
from torchkafka.worker.model import Launched, ModelRuntime
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import (
    Admitted,
    Batch,
    BatchItem,
    CrashGuard,
    InferenceWorker,
    Place,
    Record,
    StagingPool,
)

FEATURES = 2
QUARANTINED = (
    "quarantined",
    "2 worker processes died while it ran; quarantined without running it",
)
PIPELINED = pytest.mark.parametrize("pipelined", [False, True], ids=["cpu", "pipelined"])


def item(offset: int) -> BatchItem[Admitted]:
    """Request r<offset> at offset ``offset`` of partition 0, whose input rows hold ``offset``."""
    tensor = torch.full((FEATURES,), float(offset))
    record = Record("in", 0, offset, None, b"", [], time.monotonic())
    admitted = Admitted(record, Request(f"r{offset}", {"x": tensor}), tensor)
    return BatchItem(tensor, admitted, time.monotonic())


def place(offset: int) -> Place:
    return ("in", 0, offset)


def batch(*offsets: int) -> Batch[Admitted]:
    return Batch(tuple(item(o) for o in offsets), 8)


class Recorder(nn.Module):
    """x * 2; ``rows`` holds each batch's requests (their offsets), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append([int(v) for v in x[:, 0].tolist()])
        return x * 2


class StopsAt(Recorder):
    """A Recorder that holds a batch holding request ``offset`` until ``release``: the
    process died running it (``stopped`` is set)."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset
        self.stopped = threading.Event()
        self.release = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        doubled = super().forward(x)
        if self.offset in self.rows[-1]:
            self.stopped.set()
            self.release.wait(WAIT_S)
        return doubled


class Lifetime:
    """One worker process: an inference thread and a crash guard (its run id) on ``runs``."""

    def __init__(self, runs: MemoryDedup, model: nn.Module, pipelined: bool, limit: int) -> None:
        self.model = model
        self.outbox = MemoryOutbox()
        self.guard = CrashGuard(runs, limit)
        self.runtime = make_runtime(model, pipelined, kind=Ordered)
        self.worker = InferenceWorker(
            self.runtime,
            StagingPool(pin_memory=False),
            self.outbox,
            "w",
            8,
            WorkerMetrics(),
            crash_guard=self.guard,
        )

    def run(self, *batches: Batch[Admitted]) -> None:
        """Queue ``batches`` (a fixed order), then drain and stop."""
        for queued in batches:
            assert self.worker.try_submit(queued)
        self.worker.start()
        assert self.worker.stop(WAIT_S)
        assert self.worker.failure is None

    def die_in(self, *batches: Batch[Admitted]) -> None:
        """Run ``batches`` until the model holds its stop request: the process is dead."""
        assert isinstance(self.model, StopsAt)
        for queued in batches:
            assert self.worker.try_submit(queued)
        self.worker.start()
        assert self.model.stopped.wait(WAIT_S)

    def events(self) -> list[str]:
        assert isinstance(self.runtime, Ordered)
        return self.runtime.events


class Ordered(ModelRuntime):
    """Records launches and completions, with the requests (offsets) of each batch."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.events: list[str] = []

    def launch(self, batch: torch.Tensor, count: int) -> Launched:
        self.events.append(f"launch {_offsets(batch[:count])}")
        return super().launch(batch, count)

    def complete(self, launched: Launched) -> list[dict[str, torch.Tensor]]:
        assert isinstance(launched.output, torch.Tensor)
        self.events.append(f"complete {_offsets(launched.output[: launched.count] / 2)}")
        return super().complete(launched)


def _offsets(rows: torch.Tensor) -> list[int]:
    return [int(v) for v in rows[:, 0].tolist()]


LifetimeFactory = Callable[..., Lifetime]


@pytest.fixture
def lifetime() -> Iterator[LifetimeFactory]:
    """Makes lifetimes; at the end, lets the dead ones go on (then stop) so no thread lingers."""
    made: list[Lifetime] = []

    def make(runs: MemoryDedup, model: nn.Module, pipelined: bool, limit: int = 2) -> Lifetime:
        made.append(Lifetime(runs, model, pipelined, limit))
        return made[-1]

    yield make
    for life in made:
        if isinstance(life.model, StopsAt):
            life.model.release.set()
        life.worker.stop(WAIT_S)


@PIPELINED
def test_a_record_two_dead_processes_ran_is_quarantined_and_never_reaches_the_model(
    pipelined: bool, lifetime: LifetimeFactory
) -> None:
    runs = MemoryDedup()
    runs.runs[place(3)] = {"dead-1", "dead-2"}
    life = lifetime(runs, Recorder(), pipelined)
    life.run(batch(1, 2, 3, 4))
    assert life.outbox.dead_letters == {"r3": QUARANTINED}
    assert set(life.outbox.published) == {"r1", "r2", "r4"}
    assert isinstance(life.model, Recorder)
    assert life.model.rows == [[1, 2, 4]]
    assert runs.runs[place(3)] == {"dead-1", "dead-2"}  # kept: a later crash quarantines it again


@pytest.mark.parametrize(
    ("pipelined", "order"),
    [
        (False, ["launch [1, 2]", "complete [1, 2]", "launch [3]", "complete [3]",
                 "launch [4, 5]", "complete [4, 5]", "launch [6]", "complete [6]"]),
        (True, ["launch [1, 2]", "complete [1, 2]", "launch [3]", "complete [3]",
                "launch [4, 5]", "launch [6]", "complete [4, 5]", "complete [6]"]),
    ],
    ids=["cpu", "pipelined"],
)  # fmt: skip
def test_a_suspect_runs_alone_once_the_batch_in_flight_finished(
    pipelined: bool, order: list[str], lifetime: LifetimeFactory
) -> None:
    """Request 3 was running when a process died: it runs alone, its batch's rest after it."""
    runs = MemoryDedup()
    runs.runs[place(3)] = {"dead-1"}
    life = lifetime(runs, Recorder(), pipelined)
    life.run(batch(1, 2), batch(3, 4, 5), batch(6))
    assert life.events() == order
    assert set(life.outbox.published) == {f"r{i}" for i in range(1, 7)}
    # per batch one call as it is queued; for the one with a suspect (queued unmarked), one
    # to screen it, one for the suspect alone and one for its rest
    assert runs.run_log_calls == 6


@PIPELINED
def test_the_innocent_neighbours_of_a_poison_never_reach_the_limit(
    pipelined: bool, lifetime: LifetimeFactory
) -> None:
    """Request 4 kills every process that runs it; 1-3 and 5-8 share its batch."""
    runs = MemoryDedup()
    first = lifetime(runs, StopsAt(4), pipelined)
    first.die_in(batch(*range(1, 9)))
    assert all(runs.runs[place(i)] == {first.guard.run_id} for i in range(1, 9))

    second = lifetime(runs, StopsAt(4), pipelined)  # reads the same records again
    second.die_in(batch(*range(1, 9)))
    assert isinstance(second.model, StopsAt)
    assert second.model.rows == [[1], [2], [3], [4]]  # all suspects: each alone
    assert set(second.outbox.published) == {"r1", "r2", "r3"}
    assert runs.runs[place(4)] == {first.guard.run_id, second.guard.run_id}
    assert all(place(i) not in runs.runs for i in (1, 2, 3))  # ran alone and were cleared
    # not run yet when the process died, so not counted again
    assert all(runs.runs[place(i)] == {first.guard.run_id} for i in range(5, 9))

    third = lifetime(runs, Recorder(), pipelined)
    third.run(batch(*range(1, 9)))
    assert third.outbox.dead_letters == {"r4": QUARANTINED}
    assert set(third.outbox.published) == {f"r{i}" for i in (1, 2, 3, 5, 6, 7, 8)}
    assert isinstance(third.model, Recorder)
    assert third.model.rows == [[5], [6], [7], [8], [1, 2, 3]]


@PIPELINED
def test_batches_queued_behind_a_poison_are_counted_once_then_run_alone_and_cleared(
    pipelined: bool, lifetime: LifetimeFactory
) -> None:
    runs = MemoryDedup()
    first = lifetime(runs, StopsAt(2), pipelined)
    first.die_in(batch(1, 2), batch(5, 6))
    assert runs.runs[place(5)] == runs.runs[place(6)] == {first.guard.run_id}  # queued: marked

    second = lifetime(runs, Recorder(), pipelined)
    second.run(batch(5, 6), batch(7))
    assert isinstance(second.model, Recorder)
    assert second.model.rows == [[5], [6], [7]]
    assert set(second.outbox.published) == {"r5", "r6", "r7"}
    assert place(5) not in runs.runs
    assert place(6) not in runs.runs


def test_the_rest_of_a_batch_is_marked_only_once_its_suspects_ran(
    lifetime: LifetimeFactory,
) -> None:
    """A death during the rest counts against none of the suspects that ran, and a death
    during a suspect's run counts against none of the rest."""
    runs = MemoryDedup()
    runs.runs[place(1)] = {"dead-1"}
    rest_dies = lifetime(runs, StopsAt(2), pipelined=False)  # 2 is a new poison
    rest_dies.die_in(batch(1, 2, 3))
    assert place(1) not in runs.runs  # ran alone, cleared before the rest ran
    assert runs.runs[place(2)] == runs.runs[place(3)] == {rest_dies.guard.run_id}

    runs = MemoryDedup()
    runs.runs[place(1)] = {"dead-1"}
    suspect_dies = lifetime(runs, StopsAt(1), pipelined=False)
    suspect_dies.die_in(batch(1, 2, 3))
    assert runs.runs[place(1)] == {"dead-1", suspect_dies.guard.run_id}
    assert place(2) not in runs.runs
    assert place(3) not in runs.runs


@PIPELINED
def test_each_batch_costs_one_call_as_it_is_queued_which_clears_what_finished_before(
    pipelined: bool, lifetime: LifetimeFactory
) -> None:
    runs = MemoryDedup()
    life = lifetime(runs, Recorder(), pipelined)
    assert life.worker.try_submit(batch(1, 2))
    assert set(runs.runs) == {place(1), place(2)}  # marked on the submitting thread
    life.worker.start()
    for later in (batch(3), batch(4)):
        wait_until(life.worker.idle)
        assert life.worker.try_submit(later)
    wait_until(life.worker.idle)
    assert runs.run_log_calls == 3
    assert set(runs.runs) == {place(4)}  # marked until the next call


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_place_marked_again_while_it_runs_keeps_its_mark_until_both_runs_finish() -> None:
    """A rewind (exactly-once) reads a record again while its first run is still going."""
    runs = MemoryDedup()
    guard = CrashGuard(runs, 2)
    assert guard.mark_queued([item(1)])
    assert guard.mark_queued([item(1)])  # read again: marked by this run again
    guard.finished([item(1).token])  # the first run ends
    assert guard.mark_queued([])
    assert runs.runs[place(1)] == {guard.run_id}
    guard.finished([item(1).token])  # the second
    assert guard.mark_queued([])
    assert place(1) not in runs.runs


def test_a_stop_on_an_error_is_no_crash_and_leaves_no_marks(lifetime: LifetimeFactory) -> None:
    """An input out of device memory alone, every try, stops the worker (to run it again
    after a restart): its process did not die of it, so nothing counts against it."""
    runs = MemoryDedup()
    runs.runs[place(2)] = {"dead-1"}  # a suspect: marked by this run too while it runs alone
    life = lifetime(runs, tiny_models.Raising(torch.cuda.OutOfMemoryError("fake")), False)
    assert life.worker.try_submit(batch(1, 2))
    life.worker.start()
    assert life.worker.stop(WAIT_S)
    assert isinstance(life.worker.failure, TransientError)
    assert runs.runs[place(2)] == {"dead-1"}
    assert place(1) not in runs.runs  # screened after its suspect, which stopped the thread


def test_with_the_guard_off_batches_run_unscreened_and_nothing_is_called(
    lifetime: LifetimeFactory,
) -> None:
    runs = MemoryDedup()
    runs.runs[place(1)] = {"dead-1", "dead-2", "dead-3"}
    life = lifetime(runs, Recorder(), pipelined=False, limit=0)
    life.run(batch(1, 2), batch(3))
    assert set(life.outbox.published) == {"r1", "r2", "r3"}
    assert runs.run_log_calls == 0


def test_with_redis_away_batches_run_unguarded_and_it_is_logged_once(
    lifetime: LifetimeFactory,
) -> None:
    runs = MemoryDedup()
    runs.runs[place(1)] = {"dead-1", "dead-2"}
    runs.down = True
    life = lifetime(runs, Recorder(), pipelined=False)
    with capture_logs() as logs:
        life.run(batch(1, 2), batch(3))
    assert set(life.outbox.published) == {"r1", "r2", "r3"}
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "redis is away: batches run without the crash-loop guard"
    ]


def test_the_guard_screens_again_once_redis_is_back() -> None:
    runs = MemoryDedup()
    runs.runs[place(1)] = {"dead-1", "dead-2"}
    guard = CrashGuard(runs, 2)
    runs.down = True
    with capture_logs() as logs:
        assert guard.screen([item(1)]).all_clean  # unguarded
        runs.down = False
        screening = guard.screen([item(1), item(2)])
    assert [(i.token.request.id, n) for i, n in screening.quarantined] == [("r1", 2)]
    assert [i.token.request.id for i in screening.clean] == ["r2"]
    assert [e["event"] for e in logs] == [
        "redis is away: batches run without the crash-loop guard",
        "redis is back: batches run with the crash-loop guard",
        "quarantined: worker processes died running it",
    ]


class RefusingRunLog(MemoryDedup):
    """A run log whose Redis refuses its script (an ACL without HSET, say)."""

    def mark_running(
        self, run_id: str, places: Sequence[Place], finished: Sequence[Place], suspect: bool
    ) -> list[int]:
        raise WorkerError("redis mark_running failed: NOPERM (test)")


def test_any_other_redis_error_stops_the_submitter_before_the_batch_is_queued(
    lifetime: LifetimeFactory,
) -> None:
    life = lifetime(RefusingRunLog(), Recorder(), pipelined=False)
    with pytest.raises(WorkerError, match="NOPERM"):
        life.worker.try_submit(batch(1, 2))
    life.worker.start()
    assert life.worker.stop(WAIT_S)
    assert life.worker.failure is None
    assert isinstance(life.model, Recorder)
    assert life.model.rows == []
    assert life.outbox.published == {}


class RefusingScreens(MemoryDedup):
    """A run log that answers the first call and refuses the rest."""

    def mark_running(
        self, run_id: str, places: Sequence[Place], finished: Sequence[Place], suspect: bool
    ) -> list[int]:
        if self.run_log_calls:
            raise WorkerError("redis mark_running failed: NOPERM (test)")
        return super().mark_running(run_id, places, finished, suspect)


def test_a_refused_screening_stops_the_inference_thread_before_the_batch_runs(
    lifetime: LifetimeFactory,
) -> None:
    runs = RefusingScreens()
    runs.runs[place(2)] = {"dead-1"}  # queued unmarked: the inference thread screens it
    life = lifetime(runs, Recorder(), pipelined=False)
    assert life.worker.try_submit(batch(1, 2))
    life.worker.start()
    assert life.worker.stop(WAIT_S)
    assert isinstance(life.worker.failure, WorkerError)
    assert "NOPERM" in str(life.worker.failure)
    assert isinstance(life.model, Recorder)
    assert life.model.rows == []
    assert life.outbox.published == {}
    assert life.outbox.dead_letters == {}
    assert not life.worker.try_submit(batch(3))  # the thread died: nothing more is queued
