"""Every metric the worker exports, declared here and updated through ``WorkerMetrics``.

Each worker has its own ``CollectorRegistry`` (not prometheus_client's global
one), so several workers, or tests, can share a process. Names carry the
``torchkafka_`` prefix and base units (seconds); docs/worker.md lists them.
The methods are cheap and thread-safe: the polling loop, the inference thread
and delivery callbacks call them directly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from torchkafka.codecs import Reason
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.ops._histogram import BulkHistogram

#: Seconds, from a millisecond to half a minute.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds, from half a millisecond to five: the done-mark delay is short unless Redis stalls.
MARK_DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: The ``outcome`` label: what was published for an input record.
OUTCOMES = ("result", "dead_letter")
#: The ``outcome`` label of exactly-once transactions.
TRANSACTION_OUTCOMES = ("committed", "aborted")


class RetryKind(StrEnum):
    """What was tried again: the ``kind`` label of ``torchkafka_retries_total``."""

    REDIS = "redis"  # a Redis call, after a transient error
    PARKED = "parked"  # a record re-checked at the dedup gate
    BATCH_SPLIT = "batch_split"  # a failing batch, re-run in halves
    PRODUCE_QUEUE_FULL = "produce_queue_full"  # a produce, after the local queue was full
    RETRY_TIER = "retry_tier"  # a record whose model call failed, sent to a retry tier's topic


class WorkerMetrics:
    """The worker's metrics on a registry of their own (``registry``, for the server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._consumed = Counter(
            "torchkafka_messages_consumed_total", "Records read from the input topic", registry=r
        )
        self._produced = Counter(
            "torchkafka_messages_produced_total",
            "Results and dead letters acknowledged by the broker",
            ["outcome"],
            registry=r,
        )
        self._dead_letters = Counter(
            "torchkafka_dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self._dedup_skipped = Counter(
            "torchkafka_dedup_skipped_total",
            "Records skipped because their id is done or repeats an id of the same poll",
            registry=r,
        )
        self._retries = Counter(
            "torchkafka_retries_total", "Things tried again, by kind", ["kind"], registry=r
        )
        self._batch_size = Histogram(
            "torchkafka_batch_size",
            "Inputs per successful model call",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self._queue_wait = BulkHistogram(
            "torchkafka_queue_wait_seconds",
            "Per request, from entering the batcher to its model call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._inference = Histogram(
            "torchkafka_inference_seconds",
            "Duration of successful model calls",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._end_to_end = BulkHistogram(
            "torchkafka_end_to_end_seconds",
            "Per record, from consumed to its result or dead letter acknowledged",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._mark_delay = BulkHistogram(
            "torchkafka_done_mark_delay_seconds",
            "Per result, from its produce call to its done-mark written: "
            "the window in which a killed worker leaves a result unmarked",
            buckets=MARK_DELAY_BUCKETS,
            registry=r,
        )
        self._paused = Gauge(
            "torchkafka_paused", "1 while the assigned partitions are paused", registry=r
        )
        self._redis_outage = Gauge(
            "torchkafka_redis_outage",
            "1 while the last Redis call failed after its retries",
            registry=r,
        )
        self._state_losses = Counter(
            "torchkafka_dedup_state_losses_total",
            "Times Redis was found without its done-marks (restarted empty, flushed)",
            registry=r,
        )
        self._holding_for_state = Gauge(
            "torchkafka_dedup_state_lost",
            "1 while the worker holds its work because Redis lost its done-marks",
            registry=r,
        )
        self._claims_lost = Counter(
            "torchkafka_claims_lost_total",
            "Claims on ids in progress found expired or taken over when renewed",
            registry=r,
        )
        self._lag = Gauge(
            "torchkafka_consumer_lag",
            "High watermark minus the consumer's position, per assigned partition",
            ["topic", "partition"],
            registry=r,
        )
        self._transactions = Counter(
            "torchkafka_transactions_total",
            "Exactly-once transactions, committed or aborted (an abort re-runs their records)",
            ["outcome"],
            registry=r,
        )
        self._transaction_commit = Histogram(
            "torchkafka_transaction_commit_seconds",
            "Exactly-once: flushing the producer, sending the offsets and committing",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        for outcome in TRANSACTION_OUTCOMES:
            self._transactions.labels(outcome)
        for reason in [*Reason, *WorkerReason]:
            self._dead_letters.labels(reason.value)
        for kind in RetryKind:
            self._retries.labels(kind.value)
        for outcome in OUTCOMES:
            self._produced.labels(outcome)
            self._end_to_end.labels(outcome)

    def consumed(self, n: int) -> None:
        """``n`` records were read from the input topic."""
        self._consumed.inc(n)

    def delivered(self, outcome: str, e2e_s: Collection[float]) -> None:
        """The broker acknowledged results or dead letters, each ``e2e_s`` after its record."""
        self._produced.labels(outcome).inc(len(e2e_s))
        self._end_to_end.labels(outcome).observe_many(e2e_s)

    def marked_done(self, delays_s: Iterable[float]) -> None:
        """Done-marks were written, each ``delays_s`` after its result was produced."""
        self._mark_delay.observe_many(delays_s)

    def dead_lettered(self, reason: str) -> None:
        """A record was handed to the producer for the dead-letter topic."""
        self._dead_letters.labels(reason).inc()

    def dedup_skipped(self, n: int) -> None:
        """``n`` records were skipped by the dedup gate."""
        self._dedup_skipped.inc(n)

    def retry(self, kind: RetryKind, n: int = 1) -> None:
        """``n`` things of ``kind`` are tried again."""
        self._retries.labels(kind.value).inc(n)

    def batch(self, size: int, infer_s: float, queue_waits_s: Iterable[float]) -> None:
        """A model call on ``size`` inputs took ``infer_s``; each input had waited as given."""
        self._batch_size.observe(size)
        self._inference.observe(infer_s)
        self._queue_wait.observe_many(queue_waits_s)

    def paused(self, flag: bool) -> None:
        """The assigned partitions were paused (True) or resumed (False)."""
        self._paused.set(flag)

    def redis_outage(self, flag: bool) -> None:
        """A Redis call failed after its retries (True), or one succeeded (False)."""
        self._redis_outage.set(flag)

    def dedup_state_lost(self, holding: bool) -> None:
        """Redis was found without its done-marks; ``holding``: the worker waits for them."""
        self._state_losses.inc()
        self._holding_for_state.set(int(holding))

    def dedup_state_restored(self) -> None:
        """Redis holds the done-marks again (restored, or the loss accepted)."""
        self._holding_for_state.set(0)

    def claims_lost(self, n: int) -> None:
        """``n`` claims on ids in progress were found lost when renewed."""
        self._claims_lost.inc(n)

    def transaction_committed(self, commit_s: float) -> None:
        """A transaction was committed; its commit took ``commit_s``."""
        self._transactions.labels("committed").inc()
        self._transaction_commit.observe(commit_s)

    def transaction_aborted(self) -> None:
        """A transaction was aborted: its records run again."""
        self._transactions.labels("aborted").inc()

    def consumer_lag(self, partition: tuple[str, int], lag: int) -> None:
        """Records of ``partition`` not yet read by this worker."""
        self._lag.labels(partition[0], str(partition[1])).set(lag)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag of partitions this worker no longer owns."""
        for topic, partition in partitions:
            self._lag.remove(topic, str(partition))
