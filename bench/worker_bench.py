"""One worker's throughput next to its model's bare throughput, side by side in one run.

For each case (a tiny MLP on float32[64]; resnet18 on uint8 3x64x64 with
imagenet preprocessing and topk:5), at batch size 32:
  bare  ModelRuntime.infer on ready batches of 32 (no Kafka, no Redis, no
        decoding), with the worker's thread count; timed before and after e2e
  e2e   requests pre-produced to a fresh input topic, so the worker is the
        bottleneck; one worker (run_worker in a thread of this process, with
        dedup in Redis) drains them; throughput from the first result to the
        last, by the results' own timestamps (set when the worker produced them)
and prints msg/s for both and their ratio. Needs the local Kafka and Redis
(`make up`). Run: python bench/worker_bench.py [--tiny-count N] [--resnet-count N]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import redis
import torch
from confluent_kafka import Consumer, Producer, TopicPartition

from torchkafka.codecs import decode_result
from torchkafka.topology import TopicSpec, admin_client, delete_topics, ensure_topics
from torchkafka.worker._app import run_worker
from torchkafka.worker._config import WorkerConfig
from torchkafka.worker._env import kafka_bootstrap, redis_url
from torchkafka.worker._logging import configure_logging
from torchkafka.worker._model_loader import load_model, resolve_device
from torchkafka.worker._model_spec import parse_model_spec
from torchkafka.worker._processing import parse_postprocess, parse_preprocess
from torchkafka.worker._producing import RequestFactory, Sender, produce_requests, synthetic_input
from torchkafka.worker._runtime import ModelRuntime

BATCH = 32
PARTITIONS = 4


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    preprocess: str
    postprocess: str
    shape: tuple[int, ...]
    dtype: str


TINY = Case("mlp float32[64]", "python:bench_models:mlp", "none", "raw", (64,), "float32")
RESNET = Case(
    "resnet18 uint8 3x64x64", "torchvision:resnet18", "imagenet", "topk:5", (3, 64, 64), "uint8"
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bare_rate(case: Case, budget_s: float) -> tuple[int, float]:
    """(messages, seconds) of ModelRuntime.infer on batches of BATCH for about ``budget_s``."""
    device = resolve_device("cpu")
    runtime = ModelRuntime(
        load_model(parse_model_spec(case.model), None, device),
        parse_preprocess(case.preprocess),
        parse_postprocess(case.postprocess),
        device,
    )
    batch = torch.stack([synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)])
    for _ in range(3):
        runtime.infer(batch)  # warm-up
    batches = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        runtime.infer(batch)
        batches += 1
    return batches * BATCH, elapsed


def end_to_end_rate(case: Case, bootstrap: str, redis_address: str, count: int) -> float:
    """Results per second of one worker draining ``count`` pre-produced requests."""
    run = f"torchkafka.bench.{uuid.uuid4().hex[:8]}"
    topics = {name: f"{run}.{name}" for name in ("requests", "results", "dead-letters")}
    admin = admin_client(bootstrap)
    ensure_topics(
        admin,
        [
            TopicSpec(topics["requests"], PARTITIONS),
            TopicSpec(topics["results"], PARTITIONS),
            TopicSpec(topics["dead-letters"], 1),
        ],
    )
    try:
        sender = Sender(
            Producer({"bootstrap.servers": bootstrap, "linger.ms": 5}), topics["requests"]
        )
        inputs = [synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)]
        produce_requests(sender, RequestFactory(run, inputs), count, progress=False)
        if sender.stats.failed:
            raise RuntimeError(f"pre-producing failed: {sender.stats.errors}")
        config = WorkerConfig(
            model=case.model,
            input_topic=topics["requests"],
            output_topic=topics["results"],
            dead_letter_topic=topics["dead-letters"],
            group_id=run,
            bootstrap=bootstrap,
            redis_url=redis_address,
            device="cpu",
            preprocess=case.preprocess,
            postprocess=case.postprocess,
            max_batch_size=BATCH,
            dedup_ttl_s=600,
            metrics_port=0,  # no HTTP server: nothing to collide with a running worker
        )
        _run_worker_until(config, count, timeout_s=150)
        return _result_rate(bootstrap, topics["results"], count)
    finally:
        delete_topics(admin, topics.values())
        _delete_dedup_keys(redis_address, topics["results"])


def _run_worker_until(config: WorkerConfig, results: int, timeout_s: float) -> None:
    """Run one worker in a thread until ``results`` are on its output topic."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_worker(config, stop)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=work, name="bench-worker")
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while _end_offset(config.bootstrap, config.output_topic) < results:
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not produce {results} results: {errors}")
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "torchkafka-bench-offsets"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def _result_rate(bootstrap: str, topic: str, count: int) -> float:
    """Results per second between the first and the last result's timestamp."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"torchkafka-bench-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    stamps_ms: list[int] = []
    ids: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while len(stamps_ms) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    ids.add(decode_result(message.value() or b"").id)
                    stamps_ms.append(message.timestamp()[1])
    finally:
        consumer.close()
    if len(ids) != count:
        raise RuntimeError(f"expected {count} distinct results, read {len(ids)}")
    return (count - 1) / ((max(stamps_ms) - min(stamps_ms)) / 1000)


def _delete_dedup_keys(url: str, output_topic: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"torchkafka:{output_topic}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-count", type=int, default=10_000, help="MLP requests")
    parser.add_argument("--resnet-count", type=int, default=2_000, help="resnet18 requests")
    parser.add_argument("--bare-budget", type=float, default=3.0, help="seconds per bare round")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    rows = []
    for case, count in ((TINY, args.tiny_count), (RESNET, args.resnet_count)):
        log(f"{case.label}: bare, {count} requests through one worker, bare again")
        first = bare_rate(case, args.bare_budget)
        e2e = end_to_end_rate(case, bootstrap, redis_address, count)
        second = bare_rate(case, args.bare_budget)
        bare = (first[0] + second[0]) / (first[1] + second[1])
        rows.append((case.label, e2e, bare))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    print(f"{'model':<26}{'batch':>6}{'e2e msg/s':>12}{'bare msg/s':>12}{'e2e/bare':>10}")
    for label, e2e, bare in rows:
        print(f"{label:<26}{BATCH:>6}{e2e:>12.0f}{bare:>12.0f}{e2e / bare:>10.3f}")


if __name__ == "__main__":
    main()
