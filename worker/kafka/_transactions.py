"""Exactly-once: results, dead letters and input offsets committed in one Kafka transaction.

The producer is transactional. ``TransactionalOutbox`` wraps the publisher:
every produce, from any thread, runs under one lock, so a commit sees a
settled set of outputs; while an aborted transaction is rewound it drops
whatever stale work still publishes. ``TransactionCommits`` commits the open
transaction every interval: flush the producer (every output of the
transaction is delivered or failed), settle the deliveries (their offsets
become commit points), send the offsets to the transaction with the
consumer's group metadata (KIP-447: a member fenced by a rebalance cannot
commit) and commit. The committed deliveries then get their done-marks
(``DoneMarks`` reads them from the outbox), so Redis dedup still catches a
repeated id that arrives as a separate record.

An abortable error (a failed delivery, a commit fenced by a rebalance, a
transaction timed out) aborts: read_committed readers never see the
transaction's outputs, and the loop rewinds its partitions to their committed
offsets and runs their records again. A fatal error (another producer with the
same transactional.id) stops the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from torchkafka.worker._errors import WorkerError
from torchkafka.worker.kafka._clients import kafka_error
from torchkafka.worker.kafka._commits import wait_for_held_marks
from torchkafka.worker.kafka._publisher import KafkaPublisher
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import (
    Delivery,
    DoneMarks,
    Handoff,
    Record,
    ResultMessage,
    Settlement,
    TopicPartitionKey,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Transactions aborted one after another before the worker gives up (exit 1).
MAX_ABORTS_IN_A_ROW = 5


class TransactionalOutbox:
    """The ``Outbox`` of exactly-once mode: produces under one lock; committed deliveries out.

    ``completed`` returns the deliveries of committed transactions (for
    ``DoneMarks``); ``delivered`` those of the open one (for its commit). A
    produce the producer refuses (librdkafka refuses every produce once the
    transaction has failed) fails the transaction: ``failure`` says why, and
    what follows is dropped until the rewind.
    """

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher
        #: Held by every produce and by a commit: nothing is produced while one runs.
        self.lock = threading.RLock()
        self._discarding = False
        self._discarded = 0
        #: Why the open transaction cannot commit (a produce was refused), if it cannot.
        self.failure: str | None = None
        self._committed: Handoff[Delivery] = Handoff()

    def results(self, results: Sequence[ResultMessage]) -> None:
        """Publish the results in the open transaction (dropped while rewinding)."""
        self._publish(lambda: self._publisher.results(results), len(results))

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        """Publish ``record``'s dead letter (or retry) in the open transaction (dropped while
        rewinding)."""
        self._publish(
            lambda: self._publisher.dead_letter(record, reason, error, request_id, attempts, topic),
            1,
        )

    def _publish(self, produce: Callable[[], None], count: int) -> None:
        with self.lock:
            if self._discarding:
                self._discarded += count
                return
            try:
                produce()
            except KafkaException as exc:
                self.failure = f"a produce was refused: {exc.args[0] if exc.args else exc}"
                self._discarding = True

    def completed(self, timeout_s: float = 0.0) -> list[Delivery]:
        """Deliveries of the transactions committed since the last call (waits ``timeout_s``)."""
        return self._committed.take(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; how many are still outstanding."""
        return self._publisher.flush(timeout_s)

    def delivered(self) -> list[Delivery]:
        """The deliveries reported since the last call (hold ``lock`` for a consistent set)."""
        return self._publisher.completed()

    def committed(self, deliveries: list[Delivery]) -> None:
        """``deliveries``' transaction is committed: hand them to ``completed``."""
        self._committed.put(deliveries)

    def discard(self) -> None:
        """Drop every produce from now on (an aborted transaction's work still running)."""
        with self.lock:
            self._discarding = True

    def resume(self) -> int:
        """Produce again; how many outputs were dropped meanwhile."""
        with self.lock:
            discarded, self._discarded, self._discarding = self._discarded, 0, False
            self.failure = None
        return discarded


class TransactionCommits:
    """Exactly-once: commit outputs and input offsets together, every ``interval_s``."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        outbox: TransactionalOutbox,
        settlement: Settlement,
        marks: DoneMarks,
        metrics: WorkerMetrics,
        *,
        interval_s: float,
        timeout_s: float,
        redis_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._outbox = outbox
        self._settlement = settlement
        self._marks = marks
        self._metrics = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._redis_wait_s = redis_wait_s
        self._clock = clock
        self._due = clock() + interval_s
        self._aborted = False
        self._aborts_in_a_row = 0

    @property
    def aborted(self) -> bool:
        """Whether a transaction was aborted and its records wait to be read again."""
        return self._aborted

    def settle(self, timeout_s: float = 0.0) -> None:
        """Commit the open transaction when due.

        The deliveries ``DoneMarks`` marked were settled at their commit:
        taking them only clears them (and waits up to ``timeout_s``).
        """
        if self._marks.failure is not None:
            raise self._marks.failure
        self._marks.take(timeout_s)
        if self._clock() >= self._due:
            self._commit()

    def settle_all(self, timeout_s: float) -> None:
        """Commit the open transaction now (it flushes the producer first)."""
        self._commit()

    def forget(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Lost partitions: abort (the open transaction holds their outputs), forget them."""
        self._abort("partitions lost to another member")
        self._settlement.revoke(keys)

    def release(self, keys: Iterable[TopicPartitionKey], finished: bool) -> None:
        """Revoked partitions: forget them; their work is committed (``settle_all``).

        Unless some of it still runs: its results would land in a later
        transaction while the partitions' next owner runs their records too;
        the open transaction is aborted instead.
        """
        if not finished:
            self._abort("revoked partitions' batches did not finish within the drain time")
        self._settlement.revoke(keys)

    def finish(self) -> None:
        """Commit the last transaction; wait a while for the done-marks Redis holds back."""
        self._commit()
        wait_for_held_marks(self._marks, self._redis_wait_s, self._marks.take, self._clock)

    def rewind(self, partitions: list[TopicPartition]) -> None:
        """Read ``partitions`` again from their committed offsets; open a new transaction.

        Call once the aborted transaction's work has stopped running: what it
        published since the abort was dropped.
        """
        self._producer.flush(self._timeout_s)  # serves the aborted messages' reports
        self._outbox.delivered()  # dropped: their transaction is gone
        for tp in self._committed_offsets(partitions):
            self._seek(tp)
        self._call(self._producer.begin_transaction)
        discarded = self._outbox.resume()
        self._aborted = False
        log.info(
            "rewound to the last commit",
            partitions=sorted((tp.topic, tp.partition) for tp in partitions),
            discarded=discarded,
        )

    def _commit(self) -> None:
        """Flush, settle, send the offsets and commit; abort on an abortable error."""
        began = self._clock()
        self._due = began + self._interval_s
        if self._aborted:
            return  # nothing to commit until the loop has rewound
        with self._outbox.lock:
            unfinished = self._producer.flush(self._timeout_s)
            deliveries = self._outbox.delivered()
            failed = next((str(d.error) for d in deliveries if d.error is not None), None)
            failed = failed or self._outbox.failure
            if failed is not None or unfinished:
                self._abort(failed or f"{unfinished} messages still undelivered")
                return
            self._settlement.settle(deliveries)
            offsets = self._settlement.committable()
            if not deliveries and not offsets:
                return
            try:
                if offsets:
                    partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                    metadata = self._consumer.consumer_group_metadata()
                    self._call(
                        lambda: self._producer.send_offsets_to_transaction(
                            partitions, metadata, self._timeout_s
                        )
                    )
                self._call(lambda: self._producer.commit_transaction(self._timeout_s))
            except _Abortable as exc:
                self._abort(str(exc))
                return
            self._call(self._producer.begin_transaction)
        self._aborts_in_a_row = 0
        self._outbox.committed(deliveries)
        self._metrics.transaction_committed(self._clock() - began)

    def _abort(self, why: str) -> None:
        """Abort the open transaction: its outputs are dropped; the loop rewinds."""
        if self._aborted:
            return
        self._aborted = True
        self._outbox.discard()
        self._aborts_in_a_row += 1
        self._metrics.transaction_aborted()
        try:
            self._call(lambda: self._producer.abort_transaction(self._timeout_s))
        except _Abortable as exc:
            raise WorkerError(f"aborting the transaction failed: {exc}") from exc
        log.warning("transaction aborted; its records run again from the last commit", reason=why)
        if self._aborts_in_a_row >= MAX_ABORTS_IN_A_ROW:
            raise WorkerError(
                f"{self._aborts_in_a_row} transactions aborted in a row; the last because: {why}"
            )

    def _call(self, call: Callable[[], T]) -> T:
        """``call`` the producer, again while its error is retriable (until the timeout).

        A fatal error (fenced by a newer producer with the transactional.id)
        is a ``WorkerError``; any other is ``_Abortable``.
        """
        deadline = self._clock() + self._timeout_s
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is not None and error.fatal():
                    raise WorkerError(
                        f"the transactional producer failed for good: {error.str()} (another "
                        "worker may run with the same transactional_id)"
                    ) from exc
                retriable = error is not None and error.retriable()
                if not retriable or self._clock() >= deadline:
                    raise _Abortable(error.str() if error else str(exc)) from exc

    def _committed_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        if not partitions:
            return []
        try:
            return self._consumer.committed(partitions, timeout=self._timeout_s)
        except KafkaException as exc:
            raise WorkerError(f"cannot read the committed offsets to rewind to: {exc}") from exc

    def _seek(self, committed: TopicPartition) -> None:
        offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
        try:
            self._consumer.seek(TopicPartition(committed.topic, committed.partition, offset))
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or error.code() != KafkaError._STATE:
                raise WorkerError(f"cannot rewind {committed.topic}: {exc}") from exc
            # Not fetching yet: nothing was read past the committed offset.


class _Abortable(Exception):
    """A transactional call failed in a way that an abort recovers from."""
