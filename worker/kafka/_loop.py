"""The polling loop: the only place that consumes, pauses, commits and rebalances.

One iteration: consume a batch of records, admit them (decode, dedup), add
them to the micro-batcher, hand full or due batches to the inference thread,
then settle what the broker acknowledged: done-marks in Redis first, then the
commit watermark. When the inference queue is full, or Redis is away, the
assigned partitions are paused and polling goes on, so the group never sees a
stalled member. Each completed iteration is a heartbeat for the liveness probe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from torchkafka.worker._errors import TransientError, WorkerError
from torchkafka.worker.kafka._consumer import (
    assign_paused,
    is_record,
    record_from_message,
    topic_partitions,
)
from torchkafka.worker.kafka._publisher import KafkaPublisher
from torchkafka.worker.ops import Health, RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import (
    Admission,
    Admitted,
    Batch,
    BatchItem,
    DeadLetterGuard,
    DedupStore,
    Delivery,
    Gate,
    InferenceWorker,
    MicroBatcher,
    OffsetTracker,
    Outcome,
    TopicPartitionKey,
    batch_tensor,
    result_ids,
)

log = structlog.get_logger(__name__)

#: How long a rebalance or shutdown waits for in-flight batches.
DRAIN_TIMEOUT_S = 30.0
#: How long to wait for room in a full inference queue before polling again.
BACKLOG_WAIT_S = 0.05
#: A full inference queue for longer than this pauses the partitions.
PAUSE_AFTER_S = 0.5
#: How often parked records (ids held elsewhere, or Redis away) are retried.
PARKED_RETRY_S = 0.5
#: How often the consumer lag is measured (from the consumer's cached watermarks).
LAG_INTERVAL_S = 5.0


class WorkerLoop:
    """Drives one consumer; call ``run`` on the main thread."""

    def __init__(
        self,
        consumer: Consumer,
        input_topic: str,
        gate: Gate,
        dedup: DedupStore,
        publisher: KafkaPublisher,
        inference: InferenceWorker,
        batcher: MicroBatcher[Admitted],
        guard: DeadLetterGuard,
        owner: str,
        poll_batch: int,
        metrics: WorkerMetrics,
        health: Health,
        shutdown_redis_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._input_topic = input_topic
        self._gate = gate
        self._dedup = dedup
        self._publisher = publisher
        self._inference = inference
        self._batcher = batcher
        self._guard = guard
        self._owner = owner
        self._poll_batch = poll_batch
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._shutdown_redis_wait_s = shutdown_redis_wait_s
        self._tracker: OffsetTracker[TopicPartitionKey] = OffsetTracker()
        self._ready: deque[Batch[Admitted]] = deque()
        self._parked: list[Admitted] = []
        self._parked_retry_at = 0.0
        self._unmarked: list[Delivery] = []
        self._backlogged_since: float | None = None
        self._gate_blocked = False  # Redis was away when the gate last ran
        self._paused = False
        self._epoch = 0
        self._assigned: set[TopicPartitionKey] = set()
        self._committed: dict[TopicPartitionKey, int] = {}
        self._lag_due = 0.0
        self._renew_interval_s = dedup.claim_ttl_ms / 1000 / 3
        self._renew_due = clock() + self._renew_interval_s

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group."""
        self._consumer.subscribe(
            [self._input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set():
                self._step()
            self._drain()
        finally:
            self._consumer.close()

    def _step(self) -> None:
        if self._inference.failure is not None:
            raise WorkerError("the inference thread failed") from self._inference.failure
        if self._ready:  # the inference queue is full: wait for room, not for records
            self._inference.wait_for_room(BACKLOG_WAIT_S)
        messages = self._consumer.consume(self._intake_limit(), self._poll_timeout())
        now = self._clock()
        records = [record_from_message(m, now) for m in messages if is_record(m)]
        self._metrics.consumed(len(records))
        for record in records:
            self._tracker.track(record.partition_key, record.offset)
        if records:
            self._admit(self._gate.admit(records, self._epoch))
        if self._parked and now >= self._parked_retry_at:
            parked, self._parked = self._parked, []
            self._metrics.retry(RetryKind.PARKED, len(parked))
            self._admit(self._gate.gate(parked, self._epoch))
        self._ready.extend(self._batcher.due(now))
        self._submit_ready()
        self._settle()
        self._pause_or_resume()
        self._measure_lag(now)
        self._health.beat()

    def _poll_timeout(self) -> float:
        if self._ready:
            return 0.0
        deadline = self._batcher.next_deadline()
        if deadline is None:
            return 0.1
        return min(0.1, max(0.0, deadline - self._clock()))

    def _intake_limit(self) -> int:
        """Records to take now: what fits in the inference queue and one batch more.

        Taking more would only grow a backlog that has to be paused for, and a
        pause drops the records the consumer had already fetched.
        """
        capacity = (self._inference.queue_batches + 1) * self._batcher.max_batch_size
        backlog = len(self._batcher) + sum(len(batch) for batch in self._ready)
        return max(1, min(self._poll_batch, capacity - backlog))

    def _admit(self, admission: Admission) -> None:
        self._metrics.dedup_skipped(len(admission.skipped))
        for record in admission.skipped:
            self._tracker.ack(record.partition_key, record.offset)
        now = self._clock()
        for admitted in admission.admitted:
            # The wait for a batch counts from here, not from the poll: decoding and
            # the Redis round trips must not eat the batching window.
            item = BatchItem(batch_tensor(admitted.input), admitted, now)
            self._ready.extend(self._batcher.add(item, now))
        if admission.parked:
            self._parked += admission.parked
            self._parked_retry_at = self._clock() + PARKED_RETRY_S
        self._gate_blocked = admission.redis_down

    def _submit_ready(self) -> None:
        limit = self._inference.batch_limit
        if limit is not None and limit < self._batcher.max_batch_size:
            self._batcher.max_batch_size = limit
        while self._ready and self._inference.try_submit(self._ready[0]):
            self._ready.popleft()

    def _settle(self, timeout_s: float = 0.0) -> None:
        """Done-mark what the broker acknowledged, ack it, and commit the watermark.

        Every wait for results calls this, so it also renews the claims on the
        work in progress when due.
        """
        deliveries = self._unmarked + self._publisher.completed(timeout_s)
        if deliveries and self._mark_done(deliveries):
            self._acknowledge(deliveries)
        self._commit(self._tracker.committable(), asynchronous=True)
        self._renew_claims()

    def _renew_claims(self) -> None:
        """Every third of the claim TTL, extend the claims of admitted, unsettled ids."""
        now = self._clock()
        if now < self._renew_due or self._gate_blocked or self._unmarked:
            return  # not due, or Redis is away (it would only wait out its retries)
        self._renew_due = now + self._renew_interval_s
        lost = self._gate.renew(self._epoch)
        if lost:
            self._metrics.claims_lost(len(lost))
            log.warning(
                "claims lost while running: another worker may run these ids too",
                count=len(lost),
                ids=sorted(lost)[:20],
            )

    def _acknowledge(self, deliveries: list[Delivery]) -> None:
        """``deliveries`` are settled: their offsets may be committed."""
        self._gate.settled(d.request_id for d in deliveries if d.request_id)
        for delivery in deliveries:
            record = delivery.record
            self._tracker.ack(record.partition_key, record.offset)
            self._guard.record(delivery.outcome is Outcome.DEAD_LETTER)

    def _mark_done(self, deliveries: list[Delivery]) -> bool:
        """Write done-marks for delivered results; False (and held) while Redis is away.

        Fail-open, results go unmarked instead: the worker goes on without dedup.
        """
        for delivery in deliveries:
            if delivery.error is not None:
                # librdkafka has already retried for delivery.timeout.ms: stop without
                # committing, so that a restarted worker processes the record again.
                raise delivery.error
        ids = result_ids(deliveries)
        try:
            self._dedup.mark_done(ids, self._owner, self._epoch)
        except TransientError as exc:
            if self._gate.fail_open:
                log.warning(
                    "cannot write done-marks; committing without them (fail-open)",
                    count=len(ids),
                    error=str(exc),
                )
                self._unmarked = []
                return True
            log.warning("cannot write done-marks yet; holding commits", error=str(exc))
            self._unmarked = deliveries
            return False
        self._unmarked = []
        return True

    def _settle_unmarked(self) -> None:
        """Shutdown: wait a while for Redis to take the marks held back, then commit anyway.

        Committing a delivered result without its done-mark loses nothing, and
        the restarted group does not process its record again; only a later
        replay or re-submission of its id would get a second result. Holding
        the commit instead would make the restart redo every one of them.
        """
        deadline = self._clock() + self._shutdown_redis_wait_s
        while self._unmarked and self._clock() < deadline:
            self._settle()  # each failing try takes the Redis retries' backoff
        if self._unmarked:
            ids = result_ids(self._unmarked)
            log.error(
                "redis still away at shutdown: committing delivered results without "
                "done-marks; a replay or re-submission of these ids gets a second result",
                waited_s=self._shutdown_redis_wait_s,
                count=len(ids),
                ids=ids[:20],
            )
            self._acknowledge(self._unmarked)
            self._unmarked = []

    def _commit(self, offsets: dict[TopicPartitionKey, int], asynchronous: bool) -> None:
        if offsets:
            self._committed.update(offsets)
            partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                self._consumer.commit(offsets=partitions, asynchronous=False)

    def _pause_or_resume(self) -> None:
        redis_away = self._gate_blocked or bool(self._unmarked)
        if self._ready:
            self._backlogged_since = self._backlogged_since or self._clock()
        else:
            self._backlogged_since = None
        # A short backlog is absorbed by the intake limit; pause only for long batches.
        stuck = self._backlogged_since is not None and (
            self._clock() - self._backlogged_since > PAUSE_AFTER_S
        )
        blocked = stuck or redis_away
        if blocked != self._paused and self._assigned:
            partitions = topic_partitions(self._assigned)
            if blocked:
                self._consumer.pause(partitions)
                log.debug("paused", reason="redis" if redis_away else "inference queue full")
            else:
                self._consumer.resume(partitions)
                log.debug("resumed")
            self._paused = blocked
            self._metrics.paused(blocked)

    def _measure_lag(self, now: float) -> None:
        """Every LAG_INTERVAL_S, per partition read from: high watermark minus position."""
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_INTERVAL_S
        for tp in self._consumer.position(topic_partitions(self._assigned)):
            try:  # the watermark as of the last fetch: no broker round trip
                high = self._consumer.get_watermark_offsets(tp, cached=True)[1]
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0:  # both unknown until the first record arrives
                self._metrics.consumer_lag((tp.topic, tp.partition), high - tp.offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= keys
        log.info("assigned", partitions=sorted(keys), epoch=self._epoch)
        self._health.joined()
        if self._paused and partitions:
            assign_paused(consumer, partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, commit=True)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, commit=False)

    def _give_up(self, partitions: Sequence[TopicPartition], commit: bool) -> None:
        """Drop queued work of ``partitions``, finish in-flight work, commit what is done."""
        keys = {(tp.topic, tp.partition) for tp in partitions}

        def mine(admitted: Admitted) -> bool:
            return admitted.record.partition_key in keys

        dropped = [item.token for item in self._batcher.discard(mine)]
        dropped += [a for a in self._parked if mine(a)]
        self._parked = [a for a in self._parked if not mine(a)]
        kept: deque[Batch[Admitted]] = deque()
        for batch in self._ready:
            items = tuple(item for item in batch.items if not mine(item.token))
            dropped += [item.token for item in batch.items if mine(item.token)]
            if items:
                kept.append(Batch(items, batch.capacity))
        self._ready = kept
        self._gate.release(dropped)
        self._wait_for_in_flight()
        offsets = self._tracker.revoke(keys)
        if commit:
            final = {key: o for key, o in self._committed.items() if key in keys}
            self._commit({**final, **offsets}, asynchronous=False)
        for key in keys:
            self._committed.pop(key, None)
        self._assigned -= keys
        self._metrics.forget_partitions(keys)
        log.info("revoked", partitions=sorted(keys), committed=commit, dropped=len(dropped))

    def _wait_for_in_flight(self) -> None:
        deadline = self._clock() + DRAIN_TIMEOUT_S
        while not self._inference.idle() and self._clock() < deadline:
            self._settle(timeout_s=0.05)
        self._publisher.flush(max(0.0, deadline - self._clock()))
        self._settle()

    def _drain(self) -> None:
        """Shutdown: run what is queued, wait for its results, commit, release the rest."""
        self._ready.extend(self._batcher.drain())
        deadline = self._clock() + DRAIN_TIMEOUT_S
        while self._ready and self._clock() < deadline:
            self._submit_ready()
            self._settle(timeout_s=0.05)
        self._inference.stop(max(0.0, deadline - self._clock()))
        self._publisher.flush(max(0.0, deadline - self._clock()))
        self._settle()
        self._settle_unmarked()
        # Synchronously, everything: earlier asynchronous commits may still be in flight.
        self._commit({**self._committed, **self._tracker.committable()}, asynchronous=False)
        self._gate.release(self._parked)
        log.info("drained", parked=len(self._parked), unsent_batches=len(self._ready))
