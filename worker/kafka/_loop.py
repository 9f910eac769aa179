"""The polling loop: the only place that consumes, pauses, commits and rebalances.

One step: consume a batch of records, admit them (decode, dedup), add them to
the micro-batcher, hand full or due batches to the inference thread, then
settle and commit what is done through the ``Committer``: at-least-once,
offsets once the broker acknowledged the results and Redis marked them done
(``DoneMarks`` marks on its own thread as delivery reports arrive);
exactly-once, results and offsets in one transaction, rewinding to the last
commit when one is aborted. When ``Backpressure`` says so (a lasting backlog,
or Redis away) the assigned partitions are paused and polling goes on, so the
group never sees a stalled member. Each step is a heartbeat for the liveness
probe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from torchkafka.worker._errors import WorkerError
from torchkafka.worker.kafka._commits import Committer
from torchkafka.worker.kafka._consumer import RecordReader, assign_paused, topic_partitions
from torchkafka.worker.ops import Health, RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import (
    Admission,
    Admitted,
    Backpressure,
    Batch,
    BatchItem,
    DoneMarks,
    Gate,
    InferenceWorker,
    MicroBatcher,
    Parking,
    PauseReason,
    Settlement,
    TopicPartitionKey,
    batch_tensor,
    intake_limit,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LoopTimings:
    """The loop's waits, in seconds."""

    #: How long a rebalance or shutdown waits for in-flight batches.
    drain_s: float = 30.0
    #: How often the claims of work in progress are renewed (a third of their TTL).
    claim_renew_s: float = 10.0
    #: How long to wait for room in a full inference queue before polling again.
    backlog_wait_s: float = 0.05
    #: A backlog that lasts longer than this pauses the partitions.
    pause_after_s: float = 0.5
    #: How often parked records (ids held elsewhere, or Redis away) are retried.
    parked_retry_s: float = 0.5
    #: How often the consumer lag is measured (from the consumer's cached watermarks).
    lag_interval_s: float = 5.0


class WorkerLoop:
    """Drives one consumer: ``run`` on the main thread (or ``subscribe``, ``step``, ``drain``)."""

    def __init__(
        self,
        consumer: Consumer,
        input_topic: str,
        gate: Gate,
        settlement: Settlement,
        marks: DoneMarks,
        commits: Committer,
        inference: InferenceWorker,
        batcher: MicroBatcher[Admitted],
        poll_batch: int,
        metrics: WorkerMetrics,
        health: Health,
        timings: LoopTimings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._reader = RecordReader(consumer)
        self._input_topic = input_topic
        self._gate = gate
        self._settlement = settlement
        self._marks = marks
        self._commits = commits
        self._inference = inference
        self._batcher = batcher
        self._poll_batch = poll_batch
        self._metrics = metrics
        self._health = health
        self._timings = timings
        self._clock = clock
        self._backpressure = Backpressure(timings.pause_after_s, clock)
        self._parking = Parking(timings.parked_retry_s, clock)
        self._ready: deque[Batch[Admitted]] = deque()
        self._gate_blocked = False  # Redis was away when the gate last ran
        self._paused = False
        self._epoch = 0
        self._assigned: set[TopicPartitionKey] = set()
        self._lag_due = 0.0
        self._renew_due = clock() + timings.claim_renew_s

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group."""
        self.subscribe()
        try:
            while not stop.is_set():
                self.step()
            self.drain()
        except BaseException:
            self._release_queued()
            raise
        finally:
            self._close()

    def _close(self) -> None:
        """Leave the group; a broker that refuses (mid-rebalance) only delays the leave."""
        try:
            self._consumer.close()
        except KafkaException as exc:
            log.warning("leaving the group failed; the session timeout ends it", error=str(exc))

    def subscribe(self) -> None:
        """Join the group; partitions arrive through the rebalance callbacks."""
        self._consumer.subscribe(
            [self._input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def step(self) -> None:
        """One iteration: poll, admit, batch, submit, settle, pause or resume."""
        self._raise_if_inference_failed()
        if self._commits.aborted:
            self._rewind()
        if self._waiting_for_room():  # wait for the model, not for records
            self._inference.wait_for_room(self._timings.backlog_wait_s)
        self._flush_due(self._clock())
        self._submit_ready()  # before the poll: the model must not wait for its admission
        messages = self._poll(self._intake_limit())
        now = self._clock()
        records = self._reader.records(messages, now)
        self._metrics.consumed(len(records))
        self._settlement.track(records)
        if records:
            self._admit(self._gate.admit(records, self._epoch))
        parked = self._parking.due()
        if parked:
            self._metrics.retry(RetryKind.PARKED, len(parked))
            self._admit(self._gate.gate(parked, self._epoch))
        self._flush_due(now)
        self._submit_ready()
        self._settle()
        self._pause_or_resume()
        self._measure_lag(now)
        self._health.beat()

    def drain(self) -> None:
        """Shutdown: run what is queued, wait for its results, commit, release the rest."""
        self._ready.extend(self._batcher.drain())
        deadline = self._clock() + self._timings.drain_s
        while self._ready and self._clock() < deadline and self._inference.failure is None:
            self._submit_ready()
            self._settle(timeout_s=0.05)
        if not self._inference.stop(max(0.0, deadline - self._clock())):
            log.error("the inference thread did not finish its batches in time")
        self._commits.settle_all(max(0.0, deadline - self._clock()))
        self._commits.finish()
        unsent = sum(len(batch) for batch in self._ready)
        parked = len(self._parking)
        self._release_queued()
        log.info("drained", parked=parked, unsent=unsent)

    def _raise_if_inference_failed(self) -> None:
        failure = self._inference.failure
        if isinstance(failure, WorkerError):
            raise failure
        if failure is not None:
            raise WorkerError("the inference thread failed") from failure

    def _waiting_for_room(self) -> bool:
        """Batches, or batcher groups past their wait, are held for a full inference queue."""
        if self._inference.has_room():
            return False
        deadline = self._batcher.next_deadline()
        return bool(self._ready) or (deadline is not None and deadline <= self._clock())

    def _flush_due(self, now: float) -> None:
        """Groups past their wait leave the batcher once the model can take them.

        While the model is busy, a due group goes on filling (up to its size):
        its records would wait anyway, and they run in one batch, not in
        several small ones.
        """
        if not self._ready and self._inference.has_room():
            self._ready.extend(self._batcher.due(now))

    def _poll_timeout(self) -> float:
        if self._ready:
            return 0.0
        deadline = self._batcher.next_deadline()
        if deadline is None:
            return 0.1
        return min(0.1, max(0.0, deadline - self._clock()))

    def _poll(self, limit: int) -> list[Message]:
        """Up to ``limit`` records; none while the intake is full, unless paused.

        A full intake is left in the consumer's prefetch (a pause would drop
        it) while the model catches up; once it has lasted ``pause_after_s``
        the partitions are paused, and polling goes on to serve the
        consumer's callbacks.
        """
        if limit == 0 and not self._paused:
            self._inference.wait_for_room(self._poll_timeout())
            self._batcher.source_behind(True)
            return []
        if self._ready or self._batcher.next_deadline() is not None:
            # A batch is forming: records that come before its deadline join it.
            messages = self._consumer.consume(max(1, limit), self._poll_timeout())
        else:
            messages = self._first_records(max(1, limit))
        self._batcher.source_behind(limit == 0 or len(messages) >= limit)
        return messages

    def _first_records(self, limit: int) -> list[Message]:
        """Idle: the first record as soon as it comes (within ``_poll_timeout``), with what
        else is there already; ``consume`` would wait its whole timeout for ``limit``."""
        first = self._consumer.poll(self._poll_timeout())
        if first is None:
            return []
        return [first, *self._consumer.consume(limit - 1, 0)] if limit > 1 else [first]

    def _capacity(self) -> int:
        """Records the inference queue holds, and one batch more."""
        return (self._inference.queue_batches + 1) * self._batcher.max_batch_size

    def _backlog(self) -> int:
        queued = sum(len(batch) for batch in self._ready)
        return len(self._batcher) + queued + len(self._parking)

    def _intake_limit(self) -> int:
        """Records to take now: taking more would only grow a backlog to pause for.

        A pause drops the records the consumer had already fetched.
        """
        return intake_limit(self._poll_batch, self._capacity(), self._backlog())

    def _admit(self, admission: Admission) -> None:
        self._metrics.dedup_skipped(len(admission.skipped))
        self._settlement.skip(admission.skipped)
        now = self._clock()
        for admitted in admission.admitted:
            # The wait for a batch counts from here, not from the poll: decoding and
            # the Redis round trips must not eat the batching window.
            item = BatchItem(batch_tensor(admitted.input), admitted, now)
            self._ready.extend(self._batcher.add(item))
        self._parking.park(admission.parked)
        self._gate_blocked = admission.redis_down

    def _submit_ready(self) -> None:
        limit = self._inference.batch_limit
        if limit is not None and limit < self._batcher.max_batch_size:
            self._batcher.max_batch_size = limit
        while self._ready and self._inference.try_submit(self._ready[0]):
            self._ready.popleft()

    def _settle(self, timeout_s: float = 0.0) -> None:
        """Settle and commit what is done (waiting up to ``timeout_s``), renew claims."""
        self._commits.settle(timeout_s)
        self._renew_claims()

    def _renew_claims(self) -> None:
        """Every third of the claim TTL, extend the claims of admitted, unsettled ids."""
        now = self._clock()
        if now < self._renew_due or self._redis_away():
            return  # not due, or Redis is away (it would only wait out its retries)
        self._renew_due = now + self._timings.claim_renew_s
        lost = self._gate.renew(self._epoch)
        if lost:
            self._metrics.claims_lost(len(lost))
            log.warning(
                "claims lost while running: another worker may run these ids too",
                count=len(lost),
                ids=sorted(lost)[:20],
            )

    def _redis_away(self) -> bool:
        return self._gate_blocked or self._marks.holding

    def _pause_or_resume(self) -> None:
        reason = self._backpressure.reason(self._intake_limit() == 0, self._redis_away())
        blocked = reason is not None
        if blocked != self._paused and self._assigned:
            partitions = topic_partitions(self._assigned)
            if blocked:
                self._consumer.pause(partitions)
                log.debug("paused", reason=str(reason))
            else:
                self._consumer.resume(partitions)
                log.debug("resumed")
            self._paused = blocked
            self._metrics.paused(blocked)
        self._health.redis_away(reason is PauseReason.REDIS)

    def _measure_lag(self, now: float) -> None:
        """Every lag interval, per partition read from: high watermark minus position."""
        if now < self._lag_due:
            return
        self._lag_due = now + self._timings.lag_interval_s
        for tp in self._consumer.position(topic_partitions(self._assigned)):
            try:  # the watermark as of the last fetch: no broker round trip
                high = self._consumer.get_watermark_offsets(tp, cached=True)[1]
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0:  # both unknown until the first record arrives
                self._metrics.consumer_lag((tp.topic, tp.partition), high - tp.offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        self._marks.fencing_token = self._epoch
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= keys
        log.info("assigned", partitions=sorted(keys), epoch=self._epoch)
        self._health.joined()
        if self._paused and partitions:
            assign_paused(consumer, partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, lost=False)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, lost=True)

    def _give_up(self, partitions: Sequence[TopicPartition], lost: bool) -> None:
        """Drop queued work of ``partitions``, finish in-flight work, commit what is done.

        Lost partitions already belong to another member: nothing of theirs is
        committed (their offsets are forgotten before the in-flight work settles).
        """
        keys = {(tp.topic, tp.partition) for tp in partitions}

        def mine(admitted: Admitted) -> bool:
            return admitted.record.partition_key in keys

        dropped = self._drop_queued(mine)
        self._gate.release(dropped)
        if lost:
            self._commits.forget(keys)
            self._wait_for_in_flight()
        else:
            self._commits.release(keys, finished=self._wait_for_in_flight())
        self._assigned -= keys
        self._metrics.forget_partitions(keys)
        log.info("revoked", partitions=sorted(keys), lost=lost, dropped=len(dropped))

    def _wait_for_in_flight(self) -> bool:
        """Wait (up to the drain time) for the submitted batches' results, and settle them.

        A failed inference thread finishes nothing more: no wait then. False
        when batches are still running at the deadline.
        """
        deadline = self._clock() + self._timings.drain_s
        while (
            not self._inference.idle()
            and self._inference.failure is None
            and self._clock() < deadline
        ):
            self._settle(timeout_s=0.05)
        finished = self._inference.failure is not None or self._inference.idle()
        self._commits.settle_all(max(0.0, deadline - self._clock()))
        return finished

    def _rewind(self) -> None:
        """Exactly-once, after an abort: run everything since the last commit again.

        The queued work is dropped, the submitted work runs out (what it
        publishes is dropped), every claim is given up, and the partitions
        are read again from their committed offsets.
        """
        self._release_queued()
        if not self._wait_for_in_flight():
            raise WorkerError(
                "an aborted transaction's batches did not finish within the drain time; "
                "stopping so that none of their results lands in the next transaction"
            )
        self._gate.release_all()
        self._settlement.revoke(self._assigned)
        self._commits.rewind(topic_partitions(self._assigned))

    def _release_queued(self) -> None:
        """Give up the claims of work never submitted, so other workers need not wait them out."""
        queued = self._drop_queued(lambda _: True)
        if queued:
            self._gate.release(queued)

    def _drop_queued(self, which: Callable[[Admitted], bool]) -> list[Admitted]:
        """Remove the admitted work ``which`` selects from the batcher, the queue and parking."""
        dropped = [item.token for item in self._batcher.discard(which)]
        dropped += self._parking.take(which)
        kept: deque[Batch[Admitted]] = deque()
        for batch in self._ready:
            items = tuple(item for item in batch.items if not which(item.token))
            dropped += [item.token for item in batch.items if which(item.token)]
            if items:
                kept.append(Batch(items, batch.capacity))
        self._ready = kept
        return dropped
