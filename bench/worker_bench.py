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
(`make up`).
Run: python bench/worker_bench.py [--tiny-count N] [--resnet-count N] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass

import torch
from e2e_harness import (
    bench_topics,
    cpu_runtime,
    log,
    on_own_thread,
    produce,
    read_results,
    result_rate,
    run_worker_until,
)

from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.config import build_config
from torchkafka.worker.ops import configure_logging
from torchkafka.worker.tools import RequestFactory

BATCH = 32


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    preprocess: str
    postprocess: str
    shape: tuple[int, ...]
    dtype: str


TINY = Case("mlp float32[64]", "python:bench_models:mlp", "none", "raw", (64,), "float32")
SMALL = Case(
    "small mlp float32[512]", "python:bench_models:small_mlp", "none", "raw", (512,), "float32"
)
RESNET = Case(
    "resnet18 uint8 3x64x64", "torchvision:resnet18", "imagenet", "topk:5", (3, 64, 64), "uint8"
)
RESNET_224 = Case(
    "resnet18 uint8 3x224x224",
    "torchvision:resnet18",
    "imagenet",
    "topk:5",
    (3, 224, 224),
    "uint8",
)


def bare_rate(
    case: Case, budget_s: float, torch_threads: int | None, batch_size: int = BATCH
) -> tuple[int, float]:
    """(messages, seconds) of ModelRuntime.infer on batches of ``batch_size`` for ``budget_s``."""
    runtime = cpu_runtime(case.model, case.preprocess, case.postprocess, torch_threads)
    batch = torch.stack(
        [synthetic_input(case.shape, case.dtype, seed) for seed in range(batch_size)]
    )

    def timed() -> tuple[int, float]:
        for _ in range(3):
            runtime.infer(batch)  # warm-up
        batches = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget_s:
            runtime.infer(batch)
            batches += 1
        return batches * batch_size, elapsed

    return on_own_thread(timed)  # as the worker's inference thread runs


def end_to_end_rate(
    case: Case, bootstrap: str, redis_address: str, count: int, **settings: object
) -> float:
    """Results per second of one worker draining ``count`` pre-produced requests.

    ``settings`` are worker settings on top of the benchmark's own.
    """
    run = f"torchkafka.bench.{uuid.uuid4().hex[:8]}"
    with bench_topics(bootstrap, redis_address, run) as topics:
        inputs = [synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)]
        produce(bootstrap, topics.requests, RequestFactory(run, inputs), count)
        config = build_config(
            {
                "model": case.model,
                "input_topic": topics.requests,
                "output_topic": topics.results,
                "dead_letter_topic": topics.dead_letters,
                "group_id": run,
                "bootstrap": bootstrap,
                "redis_url": redis_address,
                "device": "cpu",
                "preprocess": case.preprocess,
                "postprocess": case.postprocess,
                "max_batch_size": BATCH,
                "dedup_ttl_s": 600,
                "metrics_port": 0,  # no HTTP server: nothing to collide with a running worker
                **settings,
            }
        )
        run_worker_until(config, count, timeout_s=150)
        return result_rate(read_results(bootstrap, topics.results, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-count", type=int, default=10_000, help="MLP requests")
    parser.add_argument("--resnet-count", type=int, default=2_000, help="resnet18 requests")
    parser.add_argument("--bare-budget", type=float, default=3.0, help="seconds per bare round")
    parser.add_argument(
        "--torch-threads", type=int, help="torch threads for both (default: the worker's)"
    )
    args = parser.parse_args()
    threads = {"torch_threads": args.torch_threads} if args.torch_threads else {}
    configure_logging("console", "WARNING")
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    rows = []
    for case, count in ((TINY, args.tiny_count), (RESNET, args.resnet_count)):
        log(f"{case.label}: bare, {count} requests through one worker, bare again")
        first = bare_rate(case, args.bare_budget, args.torch_threads)
        e2e = end_to_end_rate(case, bootstrap, redis_address, count, **threads)
        second = bare_rate(case, args.bare_budget, args.torch_threads)
        bare = (first[0] + second[0]) / (first[1] + second[1])
        rows.append((case.label, e2e, bare))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    print(f"{'model':<26}{'batch':>6}{'e2e msg/s':>12}{'bare msg/s':>12}{'e2e/bare':>10}")
    for label, e2e, bare in rows:
        print(f"{label:<26}{BATCH:>6}{e2e:>12.0f}{bare:>12.0f}{e2e / bare:>10.3f}")


if __name__ == "__main__":
    main()
