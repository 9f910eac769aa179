"""A WorkerLoop over in-memory Kafka and Redis, with helpers to drive it.

The inference thread, batcher, gate and settlement are the real ones, with a
tiny CPU model; only Kafka and Redis are in memory (``tests.support``). With
``exactly_once`` the loop commits through ``TransactionCommits`` (every
``transaction_s``) over a ``KafkaPublisher`` on a fake transactional producer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch
from torch import nn

from tests.support.fake_kafka import FakeConsumer, FakeTransactionalProducer
from tests.support.fakes import MemoryDedup, MemoryOutbox
from tests.support.runtimes import WAIT_S, Doubling, make_runtime
from torchkafka.codecs import DEFAULT_LIMITS, Request, decode_result, encode_request
from torchkafka.worker.kafka import (
    CommitResults,
    Committer,
    KafkaPublisher,
    LoopTimings,
    OffsetCommits,
    TransactionalOutbox,
    TransactionCommits,
    WorkerLoop,
)
from torchkafka.worker.ops import Health, WorkerMetrics
from torchkafka.worker.pipeline import (
    BatchSizer,
    DeadLetterGuard,
    DoneMarks,
    Gate,
    GuardedPublisher,
    ImageDecoder,
    InferenceWorker,
    InputSpec,
    MicroBatcher,
    Outbox,
    Publisher,
    Settlement,
    StagingPool,
)

TOPIC = "in"
OUTPUT = "out"
DEAD_LETTERS = "dlq"
OWNER = "me"
MAX_BATCH = 4
QUEUE_BATCHES = 2


class FakeClock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loop:
    """A WorkerLoop over in-memory Kafka and Redis."""

    def __init__(
        self,
        model: nn.Module | None = None,
        timings: LoopTimings | None = None,
        guard: DeadLetterGuard | None = None,
        clock: Callable[[], float] = time.monotonic,
        fail_open: bool = False,
        redis_wait_s: float = 10.0,
        exactly_once: bool = False,
        transaction_s: float = 0.0,
        sizer: BatchSizer | None = None,
    ) -> None:
        self.consumer = FakeConsumer()
        self.commit_results = CommitResults()
        self.health = Health(threading.Event())
        self.health.model_loaded()
        self.consumer.on_commit = self.commit_results.on_commit
        self.outbox = MemoryOutbox()
        self.producer = FakeTransactionalProducer(self.consumer)
        outbox: Outbox = self.outbox
        if exactly_once:
            self.producer.begin_transaction()
            kafka = KafkaPublisher(
                self.producer,  # type: ignore[arg-type]
                OUTPUT,
                DEAD_LETTERS,
                OWNER,
                WorkerMetrics(),
                transactional=True,
            )
            outbox = self.transactional = TransactionalOutbox(kafka)
        self.dedup = MemoryDedup()
        publisher: Publisher = outbox if guard is None else GuardedPublisher(outbox, guard)
        self.gate = Gate(
            publisher,
            self.dedup,
            DEFAULT_LIMITS,
            InputSpec("x", "float32"),
            OWNER,
            fail_open=fail_open,
            images=ImageDecoder(1),
        )
        self.marks = DoneMarks(outbox, self.dedup, OWNER, WorkerMetrics(), fail_open=False)
        runtime = make_runtime(model or Doubling(), pipelined=False)
        self.inference = InferenceWorker(
            runtime, StagingPool(pin_memory=False), publisher, OWNER, QUEUE_BATCHES, WorkerMetrics()
        )
        settlement = Settlement(self.gate)
        commits: Committer = OffsetCommits(
            self.consumer,  # type: ignore[arg-type]
            settlement,
            self.marks,
            outbox,
            self.commit_results,
            redis_wait_s,
            clock,
        )
        if exactly_once:
            commits = TransactionCommits(
                self.producer,  # type: ignore[arg-type]
                self.consumer,  # type: ignore[arg-type]
                self.transactional,
                settlement,
                self.marks,
                WorkerMetrics(),
                interval_s=transaction_s,
                timeout_s=1.0,
                redis_wait_s=redis_wait_s,
                clock=clock,
            )
        self.loop = WorkerLoop(
            consumer=self.consumer,  # type: ignore[arg-type]
            input_topic=TOPIC,
            gate=self.gate,
            settlement=settlement,
            marks=self.marks,
            commits=commits,
            inference=self.inference,
            batcher=MicroBatcher(MAX_BATCH, 0.0, sizer=sizer),
            poll_batch=16,
            metrics=WorkerMetrics(),
            health=self.health,
            timings=timings or LoopTimings(),
            clock=clock,
        )

    def start(self, *partitions: int) -> None:
        self.inference.start()
        self.marks.start()
        self.loop.subscribe()
        self.consumer.rebalance("assign", [(TOPIC, p) for p in partitions])

    def send(self, partition: int, *ids: str) -> None:
        self.consumer.add(TOPIC, partition, [request(i) for i in ids])

    def step_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert time.monotonic() < deadline, "the loop did not get there"
            self.loop.step()

    def committed(self, partition: int) -> int:
        return self.consumer.committed_offsets().get((TOPIC, partition), 0)

    def committed_results(self) -> list[str]:
        """Exactly-once: the ids of the results in committed transactions."""
        return [decode_result(v).id for v in self.producer.topics.get(OUTPUT, []) if v]

    def close(self) -> None:
        self.inference.stop(WAIT_S)
        self.marks.stop(WAIT_S)


def request(request_id: str) -> bytes:
    return encode_request(Request(id=request_id, inputs={"x": torch.ones(2)}))
