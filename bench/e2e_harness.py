"""Shared pieces of the end-to-end benchmarks: one worker in this process, against real services.

Used by worker_bench.py and gpu_check.py. The pattern: fresh topics (and a
Redis key namespace) per run, requests pre-produced so the worker is the
bottleneck, ``run_worker`` in a thread of this process, the output topic's
end offsets watched until every result is there, then the results read back
with their broker timestamps. Needs the local Kafka and Redis (`make up`).
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from torchkafka.client import RequestSender
from torchkafka.codecs import Result, decode_result
from torchkafka.topology import admin_client, delete_topics, ensure_topics, worker_topics
from torchkafka.worker import WorkerConfig
from torchkafka.worker.app import run_worker
from torchkafka.worker.model import (
    ModelRuntime,
    load_model,
    parse_model_spec,
    parse_postprocess,
    parse_preprocess,
    resolve_device,
)
from torchkafka.worker.tools import RequestFactory, produce_requests

#: Partitions of the request and result topics.
PARTITIONS = 4
T = TypeVar("T")


def log(text: str) -> None:
    """Progress on stderr (stdout is for the report)."""
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Topics:
    """One run's request, result and dead-letter topics."""

    requests: str
    results: str
    dead_letters: str

    @classmethod
    def named(cls, run: str) -> Topics:
        """``{run}.requests``, ``{run}.results`` and ``{run}.dead-letters``."""
        return cls(f"{run}.requests", f"{run}.results", f"{run}.dead-letters")


@contextmanager
def bench_topics(
    bootstrap: str, redis_url: str, run: str, partitions: int = PARTITIONS
) -> Iterator[Topics]:
    """New topics named after ``run``; afterwards they and their dedup keys are deleted."""
    topics = Topics.named(run)
    admin = admin_client(bootstrap)
    ensure_topics(
        admin, worker_topics(topics.requests, topics.results, topics.dead_letters, partitions)
    )
    try:
        yield topics
    finally:
        delete_topics(admin, [topics.requests, topics.results, topics.dead_letters])
        delete_dedup_keys(redis_url, topics.results)


def cpu_runtime(
    model: str, preprocess: str, postprocess: str, num_threads: int | None = None
) -> ModelRuntime:
    """The model as a worker runs it on the CPU (``num_threads`` torch threads, else the
    worker's default)."""
    device = resolve_device("cpu")
    return ModelRuntime(
        load_model(parse_model_spec(model), None, device),
        parse_preprocess(preprocess),
        parse_postprocess(postprocess),
        device,
        num_threads=num_threads,
    )


def on_own_thread(work: Callable[[], T]) -> T:
    """``work()`` run on a new thread, as the worker's inference runs; its result or exception.

    Bare-model timings use it to compare like with like: on a busy CPU,
    torch's intra-op threads ran the main thread's batches markedly slower
    than a new thread's.
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="bench-bare")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outcome[0]


def produce(
    bootstrap: str, topic: str, factory: RequestFactory, count: int, rate: float | None = None
) -> float:
    """Send requests 0 .. count-1 of ``factory`` (at ``rate``/s, or at once); the seconds taken.

    Raises ``RuntimeError`` when any delivery failed.
    """
    sender = RequestSender(Producer({"bootstrap.servers": bootstrap, "linger.ms": 5}), topic)
    seconds = produce_requests(sender, factory, count, rate, progress=False)
    if sender.stats.failed:
        raise RuntimeError(f"producing to {topic} failed: {sender.stats.errors}")
    return seconds


class WorkerThread:
    """``run_worker(config)`` in a thread of this process, as a context manager.

    Leaving the block stops the worker and joins its thread.
    """

    def __init__(self, config: WorkerConfig, join_timeout_s: float = 60) -> None:
        self.config = config
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, name="bench-worker")

    def _work(self) -> None:
        try:
            run_worker(self.config, self._stop)
        except BaseException as exc:  # reported by wait_for_results
            self._errors.append(exc)

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self._join_timeout_s)

    def wait_for_results(self, count: int, timeout_s: float) -> None:
        """Return once the output topic holds ``count`` messages.

        Raises ``RuntimeError`` when the worker failed, stopped, or was not
        done within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while (found := end_offset(self.config.kafka.bootstrap, self.config.output_topic)) < count:
            if self._errors:
                raise RuntimeError(f"the worker failed: {self._errors[0]!r}") from self._errors[0]
            if not self._thread.is_alive():
                raise RuntimeError("the worker stopped before producing all results")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the worker produced {found} of {count} results within {timeout_s:.0f} s"
                )
            time.sleep(0.2)


def run_worker_until(config: WorkerConfig, results: int, timeout_s: float) -> None:
    """Run one worker in a thread until ``results`` are on its output topic."""
    with WorkerThread(config) as worker:
        worker.wait_for_results(results, timeout_s)


def end_offset(bootstrap: str, topic: str) -> int:
    """The sum of the end offsets of ``topic``'s partitions: its message count."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "torchkafka-bench-offsets"})
    try:
        partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in partitions
        )
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A result and its message's timestamp (ms; set when the worker produced it)."""

    result: Result
    timestamp_ms: int


def read_results(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> list[ReadResult]:
    """The first ``count`` results of ``topic``, read from the beginning.

    Raises ``RuntimeError`` unless they are ``count`` distinct ids.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"torchkafka-bench-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    read: list[ReadResult] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(read) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    result = decode_result(message.value() or b"")
                    read.append(ReadResult(result, message.timestamp()[1]))
    finally:
        consumer.close()
    ids = {item.result.id for item in read}
    if len(read) != count or len(ids) != count:
        raise RuntimeError(f"expected {count} distinct results, read {len(ids)} ({len(read)})")
    return read


def result_rate(results: Sequence[ReadResult]) -> float:
    """Results per second between the first and the last result's timestamp.

    The results stamped in the first millisecond (the first batch) mark the
    start, so they are not counted: with few batches, counting them would
    overstate the rate by about one batch.
    """
    stamps = [item.timestamp_ms for item in results]
    first, span_s = min(stamps), (max(stamps) - min(stamps)) / 1000
    after_first = sum(1 for stamp in stamps if stamp > first)
    return after_first / span_s if span_s > 0 else math.inf


def delete_dedup_keys(url: str, output_topic: str) -> None:
    """Delete the worker's dedup keys for ``output_topic`` (all models)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"torchkafka:{output_topic}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
    finally:
        client.close()
