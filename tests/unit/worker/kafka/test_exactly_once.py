"""Exactly-once mode without a broker: results, dead letters and offsets in one transaction.

What a read_committed reader sees is ``FakeTransactionalProducer.topics``: the
messages of committed transactions only. Every test checks that each id has
exactly one committed result, whatever was aborted on the way.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from confluent_kafka import KafkaError

from tests.support.runtimes import Gated
from tests.unit.worker.kafka.loops import DEAD_LETTERS, TOPIC, FakeClock, Loop
from torchkafka.worker import WorkerError
from torchkafka.worker.kafka._transactions import MAX_ABORTS_IN_A_ROW

ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "fenced", txn_requires_abort=True)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def once_each(loop: Loop) -> dict[str, int]:
    """The committed results that are not there exactly once (empty when all are)."""
    return {i: n for i, n in Counter(loop.committed_results()).items() if n != 1}


def test_results_and_offsets_commit_together_and_get_done_marks_after(make_loop) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0, 1)
    loop.send(0, *ids("a", 5))
    loop.send(1, *ids("b", 6))
    loop.step_until(lambda: loop.committed(0) == 5 and loop.committed(1) == 6)
    assert sorted(loop.committed_results()) == sorted(ids("a", 5) + ids("b", 6))
    assert loop.producer.aborted == 0
    loop.step_until(lambda: loop.dedup.done == set(ids("a", 5) + ids("b", 6)))
    assert loop.outbox.published == {}  # nothing went around the transaction


def test_a_failed_delivery_aborts_and_the_records_run_again_from_the_last_commit(
    make_loop,
) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0)
    loop.send(0, *ids("a", 3))
    loop.step_until(lambda: loop.committed(0) == 3)
    loop.producer.delivery_errors = [KafkaError(KafkaError._MSG_TIMED_OUT)]
    loop.send(0, *ids("b", 6))
    loop.step_until(lambda: loop.committed(0) == 9)
    assert loop.producer.aborted == 1
    assert sorted(loop.committed_results()) == sorted(ids("a", 3) + ids("b", 6))
    assert once_each(loop) == {}


def test_a_commit_refused_as_abortable_runs_its_records_again_once(make_loop) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0)
    loop.producer.commit_errors = [ABORTABLE]
    loop.send(0, *ids("a", 5))
    loop.step_until(lambda: loop.committed(0) == 5)
    assert loop.producer.aborted == 1
    assert sorted(loop.committed_results()) == ids("a", 5)


def test_what_runs_while_a_transaction_aborts_is_dropped_and_run_again(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model, exactly_once=True)
    loop.start(0)
    loop.send(0, "a")
    loop.step_until(model.entered.is_set)  # "a" is in the model
    loop.consumer.add(TOPIC, 0, [b"not msgpack"])  # its dead letter's delivery fails
    loop.producer.delivery_errors = [KafkaError(KafkaError._MSG_TIMED_OUT)]
    loop.step_until(lambda: loop.producer.aborted == 1)
    threading.Timer(0.2, model.gate.set).start()  # "a" finishes during the rewind
    loop.step_until(lambda: loop.committed(0) == 2)
    assert loop.committed_results() == ["a"]
    assert len(loop.producer.topics[DEAD_LETTERS]) == 1


def test_lost_partitions_abort_the_open_transaction(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model, exactly_once=True)
    loop.start(0)
    loop.send(0, "a")
    loop.step_until(model.entered.is_set)
    threading.Timer(0.2, model.gate.set).start()
    loop.consumer.rebalance("lost", [(TOPIC, 0)])
    loop.step_until(lambda: loop.producer.aborted == 1 and not loop.loop._commits.aborted)
    assert loop.committed_results() == []
    assert loop.committed(0) == 0
    assert loop.dedup.claims == {}  # given up for the next owner


def test_deliveries_of_an_aborted_transaction_never_reach_the_next_one(make_loop) -> None:
    clock = FakeClock()  # the transaction is never due until the clock moves
    loop = make_loop(exactly_once=True, transaction_s=10.0, clock=clock)
    loop.start(0, 1)
    loop.send(0, "a")
    loop.send(1, "b")
    loop.step_until(lambda: loop.producer.open_messages == 2 and loop.inference.idle())
    loop.consumer.rebalance("lost", [(TOPIC, 0)])  # aborts with both results unreported
    loop.step_until(lambda: loop.producer.aborted == 1 and not loop.loop._commits.aborted)
    loop.step_until(lambda: loop.producer.open_messages == 1 and loop.inference.idle())
    clock.now += 20.0  # "b" ran again: its transaction is due
    loop.step_until(lambda: loop.committed(1) == 1)
    assert loop.producer.aborted == 1  # the purged reports did not fail the next one
    assert loop.committed_results() == ["b"]


def test_revoked_partitions_commit_their_work_before_they_go(make_loop) -> None:
    model = Gated()
    loop = make_loop(model=model, exactly_once=True)
    loop.start(0)
    loop.send(0, "a", "b")
    loop.step_until(model.entered.is_set)
    threading.Timer(0.2, model.gate.set).start()
    loop.consumer.rebalance("revoke", [(TOPIC, 0)])
    loop.step_until(lambda: not loop.consumer.assignment)
    assert loop.committed(0) == 2
    assert sorted(loop.committed_results()) == ["a", "b"]


def test_shutdown_commits_the_last_transaction(make_loop) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0)
    loop.send(0, *ids("a", 3))
    loop.loop.step()
    loop.loop.drain()
    assert loop.committed(0) == 3
    assert sorted(loop.committed_results()) == ids("a", 3)


def test_a_fatal_producer_error_stops_the_worker(make_loop) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0)
    loop.producer.commit_errors = [KafkaError(KafkaError._FENCED, "fenced", fatal=True)]
    loop.send(0, "a")
    with pytest.raises(WorkerError, match="same transactional_id"):
        loop.step_until(lambda: False)
    assert loop.committed_results() == []


def test_transactions_aborted_again_and_again_stop_the_worker(make_loop) -> None:
    loop = make_loop(exactly_once=True)
    loop.start(0)
    loop.producer.commit_errors = [ABORTABLE] * MAX_ABORTS_IN_A_ROW
    loop.send(0, "a")
    with pytest.raises(WorkerError, match="aborted in a row"):
        loop.step_until(lambda: False)
    assert loop.committed_results() == []
