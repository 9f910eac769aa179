"""One, two and three `torchkafka run` processes of one group on a 6-partition topic, side by side.

Each drain: fresh 6-partition topics, requests pre-produced, N worker
processes started together (one consumer group, default settings, each with
its default torch threads). Processes join at different moments, and each
join moves partitions, so the drain is timed from the moment the group is
stable with all N members holding partitions: the results stamped after it
(their own timestamps), up to the 90th percentile's stamp, over that time.
Every request must have exactly one result (checked). CPU is the user and
system time of all N processes together over the same stretch, per result
in it. Rounds
interleave N = 1, 2, 3; the ratio to one worker is taken within each round,
and medians are reported. Workloads: W0 (tiny MLP, float32[64]: the
framework's own cost) and W2 (resnet18 at 3x64x64: the model's cost).
Needs the local Kafka and Redis (`make up`).
Run: python bench/scaling_bench.py [--rounds N] [--workloads W0,W2] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from e2e_harness import bench_topics, end_offset, log, produce, read_results
from loops_bench import BENCH, WORKLOADS, command, cpu_seconds, median
from worker_bench import BATCH, Case

from torchkafka.codecs.testing import synthetic_input
from torchkafka.topology import admin_client
from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.tools import RequestFactory

PARTITIONS = 6
#: Requests a drain, per workload: several seconds of work for one worker.
COUNTS = {"W0": 150_000, "W1": 60_000, "W2": 8_000, "W2-224": 1_500}


@dataclass(frozen=True, slots=True)
class Drain:
    """N workers' drain of one workload in one round."""

    workload: str
    workers: int
    round: int
    msgs_per_s: float
    cpu_us_per_msg: float


@contextmanager
def workers(count: int, argv: list[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes of ``argv``, stopped (SIGTERM) on exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(BENCH.parent)])}
    started = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            process.wait(60)


def members_holding(admin: AdminClient, group: str) -> int:
    """Members of a stable ``group`` that hold a partition (0 while it rebalances)."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if description.state.name != "STABLE":
        return 0
    return sum(1 for member in description.members if member.assignment.topic_partitions)


def drain(workload: str, case: Case, count: int, workers_: int, round_: int) -> Drain:
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    admin = admin_client(bootstrap)
    run = f"torchkafka.scaling.{uuid.uuid4().hex[:8]}"
    with bench_topics(bootstrap, redis_address, run, PARTITIONS) as topics:
        inputs = [synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)]
        produce(bootstrap, topics.requests, RequestFactory(run, inputs), count)
        argv = command(
            "torchkafka", case, topics.requests, topics.results, topics.dead_letters, count
        )
        group = f"bench-{topics.requests}"  # loops_bench.command's group
        with workers(workers_, argv) as processes:
            stable_ms: int | None = None
            cpu_began = 0.0
            deadline = time.monotonic() + 900
            while (found := end_offset(bootstrap, topics.results)) < count:
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"a worker exited at {found} of {count}")
                if stable_ms is None and members_holding(admin, group) == workers_:
                    stable_ms = int(time.time() * 1000)
                    cpu_began = sum(cpu_seconds(p.pid) for p in processes)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{workers_} workers answered {found} of {count} in 900 s")
                time.sleep(0.1)
            cpu_ended = sum(cpu_seconds(p.pid) for p in processes)
        if stable_ms is None:
            raise RuntimeError(f"the drain ended before {workers_} workers shared the topic")
        stamps = sorted(r.timestamp_ms for r in read_results(bootstrap, topics.results, count))
        after = [stamp for stamp in stamps if stamp > stable_ms]
        end = after[len(after) * 9 // 10]
        within = sum(1 for stamp in after if stamp <= end)
        rate = within / ((end - stable_ms) / 1000)
        cpu_per_msg = (cpu_ended - cpu_began) / max(1, len(after)) * 1e6
    return Drain(workload, workers_, round_, rate, cpu_per_msg)


def table(drains: list[Drain]) -> str:
    lines = [
        "| workload | worker processes | msg/s | vs 1 worker | CPU µs/msg (all processes) |",
        "|---|---|---|---|---|",
    ]
    for workload in dict.fromkeys(d.workload for d in drains):
        these = [d for d in drains if d.workload == workload]
        one = {d.round: d.msgs_per_s for d in these if d.workers == 1}
        for n in dict.fromkeys(d.workers for d in these):
            runs = [d for d in these if d.workers == n]
            ratio = median([d.msgs_per_s / one[d.round] for d in runs if d.round in one])
            lines.append(
                f"| {workload} | {n} | {median([d.msgs_per_s for d in runs]):.0f} "
                f"| {ratio:.2f} | {median([d.cpu_us_per_msg for d in runs]):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="W0,W2")
    parser.add_argument("--workers", default="1,2,3", help="worker process counts, e.g. 1,2,3")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    drains: list[Drain] = []
    for round_ in range(1, args.rounds + 1):
        for workload in args.workloads.split(","):
            case = WORKLOADS[workload][0]
            for n in counts:
                drains.append(drain(workload, case, COUNTS[workload], n, round_))
                log(f"round {round_} {workload} x{n}: {drains[-1].msgs_per_s:.0f} msg/s")
    print(table(drains))


if __name__ == "__main__":
    main()
