"""The polling loop's branches, without a broker: an in-memory consumer, outbox and dedup."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from confluent_kafka import KafkaError, TopicPartition

from tests.support.fake_kafka import Commit
from tests.support.runtimes import WAIT_S, Gated
from tests.unit.worker.kafka.loops import (
    MAX_BATCH,
    QUEUE_BATCHES,
    TOPIC,
    FakeClock,
    Loop,
    request,
)
from torchkafka.worker import DeadLetterLimitExceeded, DeliveryFailed, WorkerError
from torchkafka.worker.kafka import LoopTimings
from torchkafka.worker.pipeline import BatchSizer, DeadLetterGuard, ladder


def test_every_record_gets_one_result_and_the_commits_reach_the_end(make_loop) -> None:
    loop = make_loop()
    loop.start(0, 1)
    loop.send(0, *[f"a{i}" for i in range(5)])
    loop.send(1, *[f"b{i}" for i in range(6)])
    loop.step_until(lambda: loop.committed(0) == 5 and loop.committed(1) == 6)
    assert sorted(loop.outbox.published) == sorted(
        [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(6)]
    )
    assert loop.dedup.done == set(loop.outbox.published)
    assert loop.dedup.claims == {}


def test_run_drains_on_stop_commits_synchronously_and_leaves_the_group(make_loop) -> None:
    loop = make_loop()
    loop.start(0)
    loop.send(0, "a", "b", "c")
    stop = threading.Event()
    runner = threading.Thread(target=loop.loop.run, args=(stop,))
    runner.start()
    deadline = time.monotonic() + WAIT_S
    while len(loop.outbox.published) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    runner.join(WAIT_S)
    assert not runner.is_alive()
    assert loop.consumer.closed
    assert loop.consumer.log[-1] == Commit({(TOPIC, 0): 3}, asynchronous=False)


@pytest.mark.timeout(15)  # the drain's own limit is 30 s: waiting it out fails here
def test_a_result_is_marked_done_as_soon_as_it_is_delivered_not_at_the_next_poll(
    make_loop,
) -> None:
    model = Gated()
    loop = make_loop(model=model)
    loop.start(0)
    loop.send(0, "a")
    loop.step_until(model.entered.is_set)
    model.gate.set()  # the result is published while the polling loop does not step
    deadline = time.monotonic() + WAIT_S
    while loop.dedup.done != {"a"}:  # the duplicate window closes without the polling loop
        assert time.monotonic() < deadline, "the done-mark waited for the polling loop"
        time.sleep(0.005)
    loop.step_until(lambda: loop.committed(0) == 1)


def test_a_dead_inference_thread_stops_the_loop_without_waiting_out_the_drain(
    make_loop,
) -> None:
    loop = make_loop()
    loop.outbox.raise_on_result = RuntimeError("publisher bug")
    loop.start(0)
    loop.send(0, "a", "b")
    with pytest.raises(WorkerError, match="inference thread failed") as raised:
        loop.loop.run(threading.Event())
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert loop.consumer.closed
    assert loop.committed(0) == 0


def test_a_delivery_the_broker_refused_stops_the_worker_and_is_never_committed(
    make_loop,
) -> None:
    loop = make_loop()
    loop.outbox.refuse = {"c"}
    loop.start(0)
    loop.send(0, "a", "b", "c", "d")
    with pytest.raises(DeliveryFailed, match="delivery of c refused"):
        loop.step_until(lambda: False)
    assert loop.committed(0) <= 2  # never past c (offset 2)


def test_the_dead_letter_guard_stops_the_worker_before_the_dead_letter_over_its_limit(
    make_loop,
) -> None:
    loop = make_loop(guard=DeadLetterGuard(max_ratio=1.0, window=100, max_consecutive=3))
    loop.start(0)
    loop.consumer.add(TOPIC, 0, [b"not msgpack"] * 6)
    with pytest.raises(DeadLetterLimitExceeded, match="4 dead letters in a row"):
        loop.step_until(lambda: False)
    assert loop.outbox.reasons == ["malformed_msgpack"] * 3  # the 4th was never produced
    assert loop.committed(0) <= 3


def test_lost_partitions_commit_nothing_though_their_in_flight_results_settle(
    make_loop,
) -> None:
    model = Gated()
    loop = make_loop(model=model)
    loop.start(0)
    loop.send(0, "a", "b")
    loop.step_until(model.entered.is_set)  # the batch is running, held at the gate
    loop.consumer.rebalance("lost", [(TOPIC, 0)])
    threading.Timer(0.2, model.gate.set).start()
    loop.loop.step()  # on_lost runs inside consume
    assert set(loop.outbox.published) == {"a", "b"}
    assert loop.dedup.done == {"a", "b"}  # marked: the new owner will skip them
    assert loop.consumer.log == []


def test_revoke_waits_for_in_flight_results_and_commits_them_synchronously(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model)
    loop.start(0)
    loop.send(0, "a", "b")
    loop.step_until(model.entered.is_set)
    loop.consumer.rebalance("revoke", [(TOPIC, 0)])
    threading.Timer(0.2, model.gate.set).start()
    loop.loop.step()  # on_revoke runs inside consume
    assert loop.consumer.log[-1] == Commit({(TOPIC, 0): 2}, asynchronous=False)


def test_parked_records_are_retried_while_newly_parked_ones_keep_arriving(make_loop) -> None:
    clock = FakeClock()
    loop = make_loop(clock=clock)
    loop.start(0, 1)
    held = [f"a{i}" for i in range(3)]
    loop.dedup.claims.update(dict.fromkeys(held, "other-worker"))
    loop.send(0, *held)
    loop.loop.step()  # parked: another worker holds them
    loop.dedup.done.update(held)  # ... and finishes them
    # A new held record every 0.2 s, for fewer steps than it takes the parked
    # backlog to pause the partitions (which would stop the trickle).
    for i in range(8):
        loop.dedup.claims[f"b{i}"] = "other-worker"
        loop.send(1, f"b{i}")
        clock.now += 0.2
        loop.loop.step()
    assert loop.committed(0) == 3  # the old ones were retried, found done, settled


def test_parked_records_count_as_backlog_and_pause_the_partitions(make_loop) -> None:
    clock = FakeClock()
    loop = make_loop(clock=clock)
    loop.start(0)
    capacity = (QUEUE_BATCHES + 1) * MAX_BATCH
    held = [f"h{i}" for i in range(capacity)]
    loop.dedup.claims.update(dict.fromkeys(held, "other-worker"))
    loop.send(0, *held, "next")
    loop.loop.step()
    assert loop.consumer.paused == set()
    clock.now += 1.0
    loop.loop.step()
    assert loop.consumer.paused == {(TOPIC, 0)}


def test_shutdown_releases_the_claims_of_batches_never_submitted(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model, timings=LoopTimings(drain_s=0.2))
    loop.start(0)
    ids = [f"r{i}" for i in range(MAX_BATCH * (QUEUE_BATCHES + 3))]
    loop.send(0, *ids)
    loop.step_until(model.entered.is_set)
    loop.loop.step()
    loop.loop.drain()  # the model is stuck: what is not in the inference queue never runs
    model.gate.set()
    assert loop.inference.stop(WAIT_S)
    ran, released = set(loop.outbox.published), set(loop.dedup.released)
    assert ran
    assert released
    assert ran.isdisjoint(released)
    # Only work that ran keeps its claim, until its done-mark replaces it.
    assert set(loop.dedup.claims) | loop.dedup.done == ran


def test_shutdown_with_redis_away_commits_delivered_results_without_marks(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model, redis_wait_s=0.1)
    loop.start(0)
    loop.send(0, "a", "b")
    loop.step_until(model.entered.is_set)
    loop.dedup.down = True
    model.gate.set()
    loop.step_until(lambda: loop.consumer.paused == {(TOPIC, 0)})  # holding marks: paused
    assert loop.committed(0) == 0
    assert loop.health.readiness() == (False, "paused: redis is away")
    loop.loop.drain()
    assert loop.consumer.log[-1] == Commit({(TOPIC, 0): 2}, asynchronous=False)
    assert loop.dedup.done == set()


def test_a_redis_that_lost_its_marks_holds_the_work_even_fail_open(make_loop) -> None:
    loop = make_loop(fail_open=True)
    loop.start(0)
    loop.dedup.state_lost = True
    loop.send(0, "a")
    loop.step_until(lambda: loop.consumer.paused == {(TOPIC, 0)})
    assert loop.outbox.published == {}  # fail-open runs through an outage, not through a loss
    assert loop.health.readiness() == (False, "paused: redis is away")
    loop.dedup.state_lost = False  # restored, or the loss accepted
    loop.step_until(lambda: loop.committed(0) == 1)
    assert set(loop.outbox.published) == {"a"}
    assert loop.consumer.paused == set()


def test_a_commit_refused_in_a_rebalance_is_sent_again(make_loop) -> None:
    loop = make_loop()
    loop.consumer.commit_errors = [KafkaError(KafkaError.ILLEGAL_GENERATION)]
    loop.start(0)
    loop.send(0, "a")  # one record: its commit point is sent once, and refused
    loop.step_until(lambda: loop.committed(0) == 1)  # no new record needed to get there
    assert loop.consumer.commit_errors == []


def test_a_refused_commit_or_leave_at_shutdown_still_ends_cleanly(make_loop) -> None:
    loop = make_loop()
    loop.start(0)
    loop.send(0, "a", "b")
    loop.step_until(lambda: loop.committed(0) == 2)
    loop.send(0, "c")
    loop.step_until(lambda: "c" in loop.outbox.published)
    loop.consumer.commit_errors = [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)] * 2
    loop.consumer.close_error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    stop = threading.Event()
    stop.set()
    loop.loop.run(stop)  # the drain's and the revoke's commits are refused, then the leave
    assert loop.consumer.commit_errors == []  # both refusals happened, and nothing was raised
    assert loop.consumer.closed


def test_a_record_whose_headers_cannot_be_read_is_dead_lettered_and_the_stream_goes_on(
    make_loop,
) -> None:
    loop = make_loop()
    loop.start(0)
    bad_key = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    loop.consumer.add(TOPIC, 0, [request("poisoned")], headers_error=bad_key)
    loop.send(0, "after")
    loop.step_until(lambda: loop.committed(0) == 2)
    assert loop.outbox.dead_letters[None][0] == "invalid_headers"
    assert "UnicodeDecodeError" in loop.outbox.dead_letters[None][1]
    assert set(loop.outbox.published) == {"after"}


def test_an_unexpected_decoder_failure_is_an_internal_error_dead_letter(
    make_loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(value: bytes, limits: object) -> None:
        raise RecursionError("a decoder bug")

    monkeypatch.setattr("torchkafka.worker.pipeline._admission.decode_request", broken)
    loop = make_loop()
    loop.start(0)
    loop.send(0, "a")
    loop.step_until(lambda: loop.committed(0) == 1)
    assert loop.outbox.dead_letters == {None: ("internal_error", "RecursionError: a decoder bug")}


def test_a_batch_that_cannot_be_read_is_a_dead_letter_a_record_and_the_stream_goes_on(
    make_loop,
) -> None:
    """librdkafka reports the batch's first offset at every fetch from inside it, and more
    than once a poll: each of its records gets one dead letter, and the consumer seeks on."""
    loop = make_loop()
    loop.start(0)
    loop.send(0, "before")
    loop.consumer.add_unreadable(TOPIC, 0, count=3)
    loop.send(0, "after")
    loop.step_until(lambda: loop.committed(0) == 5)
    assert set(loop.outbox.published) == {"before", "after"}
    assert loop.outbox.reasons == ["unreadable_record"] * 3
    assert loop.outbox.dead_letters[None][1] == "the record cannot be read (Decompression failed)"


def test_a_ready_batch_goes_to_the_model_before_the_next_poll(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model)
    loop.start(0)
    batches = QUEUE_BATCHES + 2  # one running, the queue full, one left ready
    loop.send(0, *[f"r{i}" for i in range(batches * MAX_BATCH)])
    loop.step_until(model.entered.is_set)  # the first batch runs, held at the gate
    events: list[str] = []
    submit, consume, poll = loop.inference.try_submit, loop.consumer.consume, loop.consumer.poll

    def submitted(batch):
        accepted = submit(batch)
        events.append(f"submit {accepted}")
        return accepted

    def consumed(*args):
        events.append("consume")
        return consume(*args)

    def polled(*args):
        events.append("consume")
        return poll(*args)

    loop.inference.try_submit = submitted
    loop.consumer.consume, loop.consumer.poll = consumed, polled
    model.gate.set()  # the thread takes the next batch: room for the ready one
    loop.loop.step()
    assert "submit True" in events
    assert events.index("submit True") < events.index("consume")
    loop.step_until(lambda: len(loop.outbox.published) == batches * MAX_BATCH)


def test_the_batch_sizer_learns_from_each_poll_whether_records_wait(make_loop) -> None:
    sizer = BatchSizer(ladder(MAX_BATCH))
    loop = make_loop(sizer=sizer)
    loop.start(0)
    loop.send(0, *[f"r{i}" for i in range(40)])  # more than a poll takes
    loop.loop.step()
    assert sizer.behind
    loop.step_until(lambda: len(loop.outbox.published) == 40)
    loop.loop.step()  # an empty poll
    assert not sizer.behind


def test_a_full_intake_takes_nothing_more_and_pauses_only_if_it_lasts(make_loop) -> None:
    """The records wait in the consumer's prefetch, which a pause would drop."""
    clock = FakeClock()
    model = Gated()
    loop = make_loop(model=model, clock=clock)
    loop.start(0)
    capacity = (QUEUE_BATCHES + 1) * MAX_BATCH
    loop.send(0, *[f"r{i}" for i in range(3 * capacity)])
    loop.step_until(model.entered.is_set)
    loop.step_until(lambda: position(loop) > capacity)  # the intake is full
    taken = position(loop)
    consumed: list[int] = []
    consume = loop.consumer.consume

    def counted(*args):
        consumed.append(1)
        return consume(*args)

    loop.consumer.consume = counted
    for _ in range(3):
        loop.loop.step()
    assert consumed == []  # no trickle of one record per poll
    assert position(loop) == taken
    assert loop.consumer.paused == set()
    clock.now += 1.0  # the model still holds its batch: the full intake lasts
    loop.loop.step()
    loop.loop.step()
    assert loop.consumer.paused == {(TOPIC, 0)}
    assert consumed  # paused, polling goes on (callbacks), taking nothing
    assert position(loop) == taken
    model.gate.set()
    loop.step_until(lambda: len(loop.outbox.published) == 3 * capacity)
    assert loop.consumer.paused == set()


def position(loop: Loop) -> int:
    """The offset of the next record partition 0 gives the loop."""
    (partition,) = loop.consumer.position([TopicPartition(TOPIC, 0)])
    return int(partition.offset)


class GatedRows(Gated):
    """Gated, recording the rows of each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        return super().forward(x)


def test_a_group_past_its_wait_fills_on_while_the_model_is_busy(make_loop) -> None:
    """Its records would wait anyway: they run in one batch, not in several small ones."""
    model = GatedRows()
    loop = make_loop(model=model)  # batches leave at once (no wait) when there is room
    loop.start(0)
    loop.send(0, "a")
    loop.step_until(model.entered.is_set)  # [a] runs, held at the gate
    for name in [f"q{i}" for i in range(QUEUE_BATCHES)] + ["x", "y", "z"]:
        loop.send(0, name)
        loop.loop.step()  # q0, q1 fill the queue alone; x, y, z wait in the batcher
    assert not loop.inference.has_room()
    model.gate.set()
    loop.step_until(lambda: len(loop.outbox.published) == QUEUE_BATCHES + 4)
    assert model.rows == [1] * (QUEUE_BATCHES + 1) + [3]


def test_an_idle_loop_takes_the_first_record_as_it_comes(
    make_loop,
) -> None:
    """``consume(n, timeout)`` waits out its timeout unless n records come: an idle worker
    polls for one record (returned as soon as it is there), then takes what else is ready."""
    loop = make_loop()
    loop.start(0)
    calls: list[tuple[str, int | None, float]] = []
    poll, consume = loop.consumer.poll, loop.consumer.consume

    def polled(timeout):
        calls.append(("poll", None, timeout))
        return poll(timeout)

    def consumed(num_messages, timeout):
        calls.append(("consume", num_messages, timeout))
        return consume(num_messages, timeout)

    loop.consumer.poll, loop.consumer.consume = polled, consumed
    loop.loop.step()  # nothing there: one poll, its whole timeout
    assert calls == [("poll", None, 0.1)]
    loop.send(0, "a", "b", "c")
    calls.clear()
    loop.loop.step()  # the first record, and the two there with it, at once
    assert [(name, timeout) for name, _, timeout in calls[:2]] == [("poll", 0.1), ("consume", 0)]
    loop.step_until(lambda: sorted(loop.outbox.published) == ["a", "b", "c"])
