"""Done-marks written as delivery reports arrive, on their own thread; held while Redis is away."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch

from tests.support.fakes import MemoryDedup, MemoryOutbox
from tests.support.runtimes import WAIT_S
from torchkafka.codecs import ModelInfo, Result, encode_result
from torchkafka.worker import WorkerError
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import DoneMarks, Outcome, Record, ResultMessage

OWNER = "me"


def record(offset: int) -> Record:
    return Record(
        topic="in",
        partition=0,
        offset=offset,
        key=None,
        value=b"",
        headers=[],
        received_s=time.monotonic(),
    )


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


def take(marks: DoneMarks, count: int) -> list[str | None]:
    """The request ids of the next ``count`` settled deliveries."""
    taken: list[str | None] = []
    deadline = time.monotonic() + WAIT_S
    while len(taken) < count:
        assert time.monotonic() < deadline, f"only {len(taken)} of {count} settled"
        taken += [d.request_id for d in marks.take(0.05)]
    return taken


class FailingDedup(MemoryDedup):
    """A store whose writes fail with an error retrying cannot fix (a script error)."""

    def mark_done(self, ids: Sequence[str], owner: str, fencing_token: int) -> None:
        raise WorkerError("redis mark_done failed: ERR script error (test)")


@pytest.fixture
def outbox() -> MemoryOutbox:
    return MemoryOutbox()


@pytest.fixture
def dedup() -> MemoryDedup:
    return MemoryDedup()


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def marks(outbox: MemoryOutbox, dedup: MemoryDedup, metrics: WorkerMetrics) -> Iterator[DoneMarks]:
    marks = DoneMarks(outbox, dedup, OWNER, metrics, fail_open=False)
    marks.start()
    yield marks
    marks.stop(WAIT_S)


def publish(outbox: MemoryOutbox, offset: int, request_id: str) -> None:
    outbox.dead_letter(record(offset), "test", "a dead letter", request_id)


def publish_result(outbox: MemoryOutbox, offset: int, request_id: str) -> None:
    result = Result(request_id, {"output": torch.zeros(1)}, ModelInfo("m", "1"))
    outbox.results([ResultMessage(record(offset), request_id, encode_result(result))])


def test_a_result_is_marked_done_as_its_report_arrives_without_anyone_asking(
    outbox: MemoryOutbox, dedup: MemoryDedup, marks: DoneMarks, metrics: WorkerMetrics
) -> None:
    publish_result(outbox, 0, "a")
    eventually(lambda: dedup.done == {"a"})  # nobody called take() or mark_now()
    taken = marks.take(WAIT_S)
    assert [(d.request_id, d.outcome) for d in taken] == [("a", Outcome.RESULT)]
    delays = metrics.registry.get_sample_value("torchkafka_done_mark_delay_seconds_count")
    assert delays == 1


def test_dead_letters_settle_without_a_mark(
    outbox: MemoryOutbox, dedup: MemoryDedup, marks: DoneMarks
) -> None:
    publish(outbox, 0, "a")
    assert [d.outcome for d in marks.take(WAIT_S)] == [Outcome.DEAD_LETTER]
    assert dedup.done == set()


def test_marks_are_held_while_redis_is_away_and_written_when_it_is_back(
    outbox: MemoryOutbox, dedup: MemoryDedup, marks: DoneMarks
) -> None:
    dedup.down = True
    publish_result(outbox, 0, "a")
    eventually(lambda: marks.holding)
    assert marks.take(0.2) == []  # nothing settles without its mark
    publish_result(outbox, 1, "b")
    dedup.down = False
    eventually(lambda: not marks.holding)
    assert dedup.done == {"a", "b"}
    assert sorted(take(marks, 2), key=str) == ["a", "b"]


def test_fail_open_settles_without_marks_while_redis_is_away(
    outbox: MemoryOutbox, dedup: MemoryDedup
) -> None:
    marks = DoneMarks(outbox, dedup, OWNER, WorkerMetrics(), fail_open=True)
    dedup.down = True
    publish_result(outbox, 0, "a")
    marks.mark_now()
    assert not marks.holding
    assert [d.request_id for d in marks.take()] == ["a"]
    assert dedup.done == set()


def test_held_deliveries_can_be_given_up_at_shutdown(
    outbox: MemoryOutbox, dedup: MemoryDedup
) -> None:
    marks = DoneMarks(outbox, dedup, OWNER, WorkerMetrics(), fail_open=False)
    dedup.down = True
    publish_result(outbox, 0, "a")
    marks.mark_now()
    assert marks.holding
    assert [d.request_id for d in marks.give_up_held()] == ["a"]
    assert not marks.holding


def test_a_refused_delivery_comes_through_unmarked(
    outbox: MemoryOutbox, dedup: MemoryDedup, marks: DoneMarks
) -> None:
    outbox.refuse = {"a"}
    publish_result(outbox, 0, "a")
    publish_result(outbox, 1, "b")
    assert sorted(take(marks, 2), key=str) == ["a", "b"]
    assert dedup.done == {"b"}


def test_an_error_retrying_cannot_fix_ends_the_thread_as_a_failure(outbox: MemoryOutbox) -> None:
    marks = DoneMarks(outbox, FailingDedup(), OWNER, WorkerMetrics(), fail_open=False)
    marks.start()
    publish_result(outbox, 0, "a")
    eventually(lambda: marks.failure is not None)
    assert "script error" in str(marks.failure)
    marks.stop(WAIT_S)
