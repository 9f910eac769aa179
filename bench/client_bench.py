"""What the client adds to a request's round trip, side by side with a hand-written loop.

One worker (``run_worker`` in a thread of this process, the MLP on
float32[64]) serves fresh topics. Two ways to send a request and get its
result are timed, interleaved in one run so that both see the same machine:
  raw     a hand-written loop: a plain producer sends the request (flushed),
          a plain consumer, assigned to the result topic, reads until that id
          comes back: the pipeline's own round trip
  client  ``Client.infer`` (and ``submit_many``): the same, plus the client's
          futures, routing thread and dead-letter topic
Low load: one request at a time (20 ms apart, the two ways taking turns to
go first), p50/p99 of each. Many in flight: N
requests sent with one flush, then the time until every result is back.
Routing: the client reads every result on the topic, its own or not; the
cost per result of decoding one is timed on its own (``decode_result``).
Needs the local Kafka and Redis (`make up`).
Run: python bench/client_bench.py [--requests N] [--burst N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from e2e_harness import PARTITIONS, WorkerThread, bench_topics, log

from torchkafka.client import Client, Submission
from torchkafka.codecs import Encoder, ModelInfo, Request, Result, decode_result
from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.config import build_config
from torchkafka.worker.ops import configure_logging

T = TypeVar("T")
#: The pause before each low-load round trip.
PAUSE_S = 0.02


class RawLoop:
    """A hand-written request-reply loop: a producer and an assigned consumer of the results."""

    def __init__(self, bootstrap: str, requests: str, results: Consumer) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self._topic = requests
        self._results = results
        self._encoder = Encoder()

    def send(self, request: Request) -> None:
        value = self._encoder.request(request)
        self._producer.produce(self._topic, key=request.id.encode(), value=value)

    def round_trip(self, request: Request) -> None:
        """Send ``request`` and read results until its own is back."""
        self.send(request)
        self._producer.flush()
        self.wait_for({request.id})

    def wait_for(self, ids: set[str]) -> None:
        waiting = set(ids)
        deadline = time.monotonic() + 120
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} results did not come back")
            first = self._results.poll(0.1)  # returns with the first result that comes
            if first is None:
                continue
            for message in [first, *self._results.consume(500, 0)]:  # and what else is there
                if message.error() is None:
                    waiting.discard(decode_result(message.value() or b"").id)

    def burst(self, requests: list[Request]) -> None:
        for request in requests:
            self.send(request)
        self._producer.flush()
        self.wait_for({request.id for request in requests})


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def timed(work: Callable[[T], object], argument: T) -> float:
    """Seconds ``work(argument)`` took."""
    start = time.perf_counter()
    work(argument)
    return time.perf_counter() - start


def routing_cost_us(value: bytes, repeats: int = 20_000) -> float:
    """Microseconds the client's thread spends decoding one result it may not await."""
    start = time.perf_counter()
    for _ in range(repeats):
        decode_result(value)
    return (time.perf_counter() - start) / repeats * 1e6


def at_end(consumer: Consumer, topic: str, partitions: int) -> list[TopicPartition]:
    """Each partition of ``topic`` at its end offset now."""
    return [
        TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
        for p in range(partitions)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="low-load requests per way")
    parser.add_argument("--burst", type=int, default=2000, help="requests in flight at once")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per way")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    run = f"torchkafka.bench.client.{uuid.uuid4().hex[:8]}"
    inputs = [synthetic_input((64,), "float32", seed) for seed in range(32)]
    with bench_topics(bootstrap, redis_address, run) as topics:
        config = build_config(
            {
                "model": "python:bench_models:mlp",
                "input_topic": topics.requests,
                "output_topic": topics.results,
                "dead_letter_topic": topics.dead_letters,
                "group_id": run,
                "bootstrap": bootstrap,
                "redis_url": redis_address,
                "device": "cpu",
                "preprocess": "none",
                "postprocess": "raw",
                "max_batch_size": 32,
                "metrics_port": 0,
            }
        )
        with (
            WorkerThread(config),
            Client(config.kafka, topics.requests, topics.results, topics.dead_letters) as client,
        ):
            results = Consumer({"bootstrap.servers": bootstrap, "group.id": run})
            results.assign(at_end(results, topics.results, PARTITIONS))
            raw = RawLoop(bootstrap, topics.requests, results)

            def request(n: int, way: str) -> Request:
                return Request(id=f"{way}-{n}", inputs={"x": inputs[n % len(inputs)]})

            log("warming up")
            client.infer({"x": inputs[0]}, id="warm-client", timeout_s=120)
            raw.round_trip(request(0, "warm-raw"))
            log(f"low load: {args.requests} round trips each way, interleaved")
            latency: dict[str, list[float]] = {"raw": [], "client": []}
            worker_total: list[float] = []

            def raw_round_trip(n: int) -> None:
                raw.round_trip(request(n, "raw"))

            def client_round_trip(n: int) -> None:
                result = client.infer(request(n, "client").inputs, id=f"client-{n}")
                worker_total.append(result.timings_ms["total_ms"])

            def client_burst(requests: list[Request]) -> None:
                subs = [Submission(r.inputs, id=r.id) for r in requests]
                for future in client.submit_many(subs):
                    future.result(120)

            for n in range(args.requests):
                # Which goes first alternates: the worker's phase (its batch wait, its
                # producer's linger) would otherwise favour one way.
                ways = [("raw", raw_round_trip), ("client", client_round_trip)]
                for way, round_trip in ways if n % 2 else ways[::-1]:
                    time.sleep(PAUSE_S)  # one at a time: the worker idle before each
                    latency[way].append(timed(round_trip, n))
            log(f"many in flight: {args.rounds} bursts of {args.burst} each way, interleaved")
            rate: dict[str, list[float]] = {"raw": [], "client": []}
            for r in range(args.rounds):
                for way, burst in (("raw", raw.burst), ("client", client_burst)):
                    requests = [request(n, f"{way}-burst{r}") for n in range(args.burst)]
                    rate[way].append(args.burst / timed(burst, requests))
            results.close()
    per_result_us = routing_cost_us(
        Encoder().result(
            Result(
                id="client-0",
                outputs={"output": torch.zeros(10)},
                model=ModelInfo("mlp", "1"),
                timings_ms={"queue_ms": 1.0, "infer_ms": 1.0, "total_ms": 2.0},
            )
        )
    )

    print(f"torch {torch.__version__}; one worker, MLP float32[64], batch up to 32, this machine")
    print(f"{'':<34}{'raw loop':>12}{'client':>12}{'client/raw':>12}")
    for p in (50, 99):
        low_raw = percentile(latency["raw"], p) * 1000
        low_client = percentile(latency["client"], p) * 1000
        print(
            f"{f'round trip p{p} (ms), one at a time':<34}{low_raw:>12.2f}"
            f"{low_client:>12.2f}{low_client / low_raw:>12.2f}"
        )
    raw_rate, client_rate = statistics.median(rate["raw"]), statistics.median(rate["client"])
    print(
        f"{f'{args.burst} in flight (results/s, median)':<34}{raw_rate:>12.0f}"
        f"{client_rate:>12.0f}{client_rate / raw_rate:>12.2f}"
    )
    print(f"worker total_ms p50 (inside the worker): {statistics.median(worker_total):.2f} ms")
    print(
        f"routing: {per_result_us:.1f} us of the client's thread per result on the topic "
        f"(its own or another client's): {1e6 / per_result_us:.0f} results/s per client at most"
    )


if __name__ == "__main__":
    main()
