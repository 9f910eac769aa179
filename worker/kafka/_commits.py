"""Committing what is done: the ``Committer`` interface and its at-least-once form.

``OffsetCommits`` commits input offsets once their results are acknowledged
by the broker and marked done in Redis (exactly-once commits them in Kafka
transactions instead: ``torchkafka.worker.kafka._transactions``).

An asynchronous commit refused during a rebalance (ILLEGAL_GENERATION,
REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID) is reported only through
librdkafka's ``on_commit`` callback. Each commit point is otherwise sent
once, so a refused one would leave the group's committed offset behind every
answered record until the next record of that partition: false lag, and a
large redo after a crash. ``CommitResults`` notes refusals, and the latest
commit points of the worker's partitions are sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from torchkafka.worker.kafka._clients import kafka_error
from torchkafka.worker.pipeline import (
    Delivery,
    DoneMarks,
    Outbox,
    Settlement,
    TopicPartitionKey,
    result_ids,
)

log = structlog.get_logger(__name__)


class Committer(Protocol):
    """How the polling loop settles finished work and commits it."""

    @property
    def aborted(self) -> bool:
        """Whether work since the last commit was thrown away: the loop must ``rewind``."""
        ...

    def settle(self, timeout_s: float = 0.0) -> None:
        """Settle what is done (waiting up to ``timeout_s`` for some) and commit it when due."""
        ...

    def settle_all(self, timeout_s: float) -> None:
        """The submitted work is finished: settle and commit all of it (rebalance, shutdown)."""
        ...

    def forget(self, keys: Iterable[TopicPartitionKey]) -> None:
        """``keys`` were lost to another member: commit nothing more of theirs."""
        ...

    def release(self, keys: Iterable[TopicPartitionKey], finished: bool) -> None:
        """``keys`` are revoked: commit their final points.

        ``finished``: their submitted work ran out and is settled (else some
        of it still runs, past the drain time).
        """
        ...

    def finish(self) -> None:
        """Shutdown, after ``settle_all``: wait a while for held done-marks, commit the rest."""
        ...

    def rewind(self, partitions: list[TopicPartition]) -> None:
        """After an abort: read ``partitions`` again from their committed offsets."""
        ...


class CommitResults:
    """``on_commit`` for the consumer: remembers that a commit was refused."""

    def __init__(self) -> None:
        self._refused = False

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback (it runs inside ``consume`` or ``close``).

        The loop reports its refused synchronous commits here too.
        """
        failed = [tp for tp in partitions if tp.error is not None]
        if error is None and not failed:
            return
        reason = str(error if error is not None else failed[0].error)
        log.info(
            "commit refused; sent again while the partitions are this worker's",
            error=reason,
            partitions=sorted((tp.topic, tp.partition) for tp in failed or partitions),
        )
        self._refused = True

    def take_refused(self) -> bool:
        """Whether a commit was refused since the last call."""
        refused, self._refused = self._refused, False
        return refused


def wait_for_held_marks(
    marks: DoneMarks, wait_s: float, settle: Callable[[], object], clock: Callable[[], float]
) -> list[Delivery]:
    """Shutdown: wait up to ``wait_s`` for Redis to take the held done-marks; those it did not.

    ``settle`` runs after each try. The deliveries given up are logged.
    """
    deadline = clock() + wait_s
    while marks.holding and clock() < deadline:
        marks.mark_now(0.05)  # a failing try is quick while Redis's breaker is open
        settle()
    if not marks.holding:
        return []
    held = marks.give_up_held()
    ids = result_ids(held)
    log.error(
        "redis still away at shutdown: these results have no done-marks; a replay or "
        "re-submission of their ids gets a second result",
        waited_s=wait_s,
        count=len(ids),
        ids=ids[:20],
    )
    return held


class OffsetCommits:
    """At-least-once: commit input offsets once results are acknowledged and marked done."""

    def __init__(
        self,
        consumer: Consumer,
        settlement: Settlement,
        marks: DoneMarks,
        outbox: Outbox,
        commit_results: CommitResults,
        redis_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._settlement = settlement
        self._marks = marks
        self._outbox = outbox
        self._commit_results = commit_results
        self._redis_wait_s = redis_wait_s
        self._clock = clock
        self._committed: dict[TopicPartitionKey, int] = {}  # the latest points sent

    @property
    def aborted(self) -> bool:
        """Never: nothing published is taken back in this mode."""
        return False

    def settle(self, timeout_s: float = 0.0) -> None:
        """Settle the marked deliveries; commit their offsets asynchronously."""
        if self._marks.failure is not None:
            raise self._marks.failure
        self._settlement.settle(self._marks.take(timeout_s))
        self._commit(self._settlement.committable(), asynchronous=True)
        self._recommit_refused()

    def settle_all(self, timeout_s: float) -> None:
        """Flush the producer, mark what it acknowledged, settle and commit it."""
        self._outbox.flush(timeout_s)
        self._marks.mark_now()
        self.settle()

    def forget(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Forget ``keys``' offsets: their late results are no longer this worker's to commit."""
        keys = set(keys)
        self._settlement.revoke(keys)
        for key in keys:
            self._committed.pop(key, None)

    def release(self, keys: Iterable[TopicPartitionKey], finished: bool) -> None:
        """Commit ``keys``' final points synchronously (finished or not), then forget them."""
        keys = set(keys)
        final = {key: o for key, o in self._committed.items() if key in keys}
        self._commit({**final, **self._settlement.revoke(keys)}, asynchronous=False)
        for key in keys:
            self._committed.pop(key, None)

    def finish(self) -> None:
        """Wait for held marks, then commit everything synchronously.

        Redis still away, the delivered results are committed without their
        marks: that loses nothing, and the restarted group does not run their
        records again; only a later replay or re-submission of their ids gets a
        second result. Holding the commit instead would redo every one of them.
        """
        held = wait_for_held_marks(self._marks, self._redis_wait_s, self.settle, self._clock)
        self._settlement.settle(held)
        # Synchronously, everything: earlier asynchronous commits may still be in flight.
        self._commit({**self._committed, **self._settlement.committable()}, asynchronous=False)

    def rewind(self, partitions: list[TopicPartition]) -> None:
        """Never needed: nothing is aborted in this mode."""
        raise NotImplementedError("at-least-once commits never abort")

    def _commit(self, offsets: dict[TopicPartitionKey, int], asynchronous: bool) -> None:
        """Commit ``offsets``; a refused synchronous commit is logged, never raised.

        Refused (seen by ``CommitResults``: here for a synchronous commit,
        through ``on_commit`` for an asynchronous one), the commit is sent again
        at the next settle while the partitions are this worker's; once they
        are not, their next owner resumes from the last commit that was taken,
        which redoes answered records (dedup skips them) but loses none.
        """
        if not offsets:
            return
        self._committed.update(offsets)
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if asynchronous:
            self._consumer.commit(offsets=partitions, asynchronous=True)
            return
        try:
            results = self._consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            self._commit_results.on_commit(kafka_error(exc), partitions)
            return
        self._commit_results.on_commit(None, results)  # notes any partition refused

    def _recommit_refused(self) -> None:
        """After a refused commit, send the latest commit points of this worker's partitions."""
        if self._commit_results.take_refused():
            self._commit(dict(self._committed), asynchronous=True)
