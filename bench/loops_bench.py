"""A torchkafka worker next to the loops a user would write by hand, side by side in one run.

Workloads (``--workloads``, worker_bench.py's cases): W0, a tiny MLP on
float32[64]; W1, a small MLP (512 -> 1024 -> 1024 -> 10) on float32[512]; W2,
resnet18 on uint8 3x64x64 (imagenet preprocessing, topk:5); W2-224, the same
at 3x224x224 (minutes a round; not in the default set). Variants, each a
process of its own draining the same number of requests pre-produced to a
fresh 4-partition topic:
  torchkafka            `torchkafka run` with its defaults (adaptive batch
                        sizes up to 256, dedup in Redis, dead letters)
  torchkafka fixed 32   the same with --batch-sizing fixed --max-batch-size 32
  torchkafka fixed 256  the same with --batch-sizing fixed --max-batch-size 256
  torchkafka torchscript  the defaults with --backend torchscript (frozen, checked
                        against eager at start-up; lossless)
  torchkafka dedup off  the defaults with --dedup off (no Redis: what dedup and the
                        crash-loop guard cost)
  naive                 hand_loops.py naive: consume(500), one model call per request
  smart                 hand_loops.py smart: consume(500), one model call per poll
and bare, the model alone on ready batches of 32 and of 256 (in this process).
Rounds interleave the variants; ratios are taken against the smart loop
within each round, then their median is reported. Throughput is taken over
the middle of a drain by the results' own timestamps: the results stamped
after the 10th percentile's stamp and up to the 90th's, over that time (a
hand loop publishes a whole poll at once, so a drain takes several polls of
500). CPU is the process's user and system time from its first result to its
last (/proc), per result; memory its peak RSS.
Every variant must answer each request exactly once (checked).
Then a latency pass: each variant is sent requests at a fixed rate, 50 % and
80 % of the throughput it reached, for --latency-s seconds (after one warm-up
request has its result); latency runs from a request's creation (its
``sent_ms``, echoed in the result's meta) to its result's timestamp.
Prints markdown tables and writes table.md, results.json and plot.png (the
bench extra's matplotlib) to --out. Needs the local Kafka and Redis (`make up`).
Run: python bench/loops_bench.py [--rounds N] [--workloads W0,W1,W2] [--count N]
[--latency-s S] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from e2e_harness import (
    ReadResult,
    Topics,
    bench_topics,
    end_offset,
    log,
    produce,
    read_results,
)
from hand_loops import POLL
from worker_bench import BATCH, RESNET, RESNET_224, SMALL, TINY, Case, bare_rate

from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.ops import configure_logging
from torchkafka.worker.tools import RequestFactory

BENCH = Path(__file__).resolve().parent
#: The worker's own flags per torchkafka variant (the rest as in ``command``);
#: ``SHAPE`` stands for the workload's input shape.
SHAPE = "{shape}"
WORKER_VARIANTS = {
    "torchkafka": (),  # the defaults: adaptive batch sizes up to 256, eager
    "torchkafka fixed 32": ("--batch-sizing", "fixed", "--max-batch-size", str(BATCH)),
    "torchkafka fixed 256": ("--batch-sizing", "fixed", "--max-batch-size", "256"),
    "torchkafka torchscript": ("--backend", "torchscript", "--input-shape", SHAPE),
    "torchkafka dedup off": ("--dedup", "off"),
}
VARIANTS = (*WORKER_VARIANTS, "naive", "smart")
#: Workloads by name: (case, default requests a drain).
WORKLOADS = {
    "W0": (TINY, 20_000),
    "W1": (SMALL, 10_000),
    "W2": (RESNET, 3_000),
    "W2-224": (RESNET_224, 2_000),
}
#: The batch size of the bare model's second measurement (the worker's largest batch).
LARGE_BATCH = 256
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Latency:
    """One variant's latency at a fixed request rate."""

    workload: str
    variant: str
    load: float  # of the variant's measured throughput
    rate: float
    p50_ms: float
    p99_ms: float
    p999_ms: float


@dataclass(frozen=True, slots=True)
class Run:
    """One variant's drain in one round."""

    workload: str
    variant: str
    round: int
    msgs_per_s: float
    cpu_us_per_msg: float
    peak_rss_mib: float


def cpu_seconds(pid: int) -> float:
    """User plus system time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def command(variant: str, case: Case, source: str, sink: str, dlq: str, count: int) -> list[str]:
    if variant in WORKER_VARIANTS:
        return [
            sys.executable, "-m", "torchkafka.worker.cli", "--log-level", "WARNING", "run",
            "--model", case.model, "--preprocess", case.preprocess,
            "--postprocess", case.postprocess, "--device", "cpu",
            "--input-topic", source, "--output-topic", sink,
            "--dead-letter-topic", dlq, "--group-id", f"bench-{source}", "--metrics-port", "0",
            *(
                ",".join(map(str, case.shape)) if flag == SHAPE else flag
                for flag in WORKER_VARIANTS[variant]
            ),
        ]  # fmt: skip
    return [
        sys.executable, str(BENCH / "hand_loops.py"), variant, case.model, case.preprocess,
        case.postprocess, source, sink, str(count),
    ]  # fmt: skip


@contextmanager
def running(
    variant: str, case: Case, topics: Topics, count: int
) -> Iterator[subprocess.Popen[bytes]]:
    """``variant`` answering ``count`` requests of ``topics``, in a process stopped on exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(BENCH.parent)])}
    argv = command(variant, case, topics.requests, topics.results, topics.dead_letters, count)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(60)


def drain(variant: str, case: Case, label: str, round_: int, count: int) -> Run:
    """Run ``variant`` on ``count`` fresh requests; its throughput, CPU and memory."""
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    run = f"torchkafka.loops.{uuid.uuid4().hex[:8]}"
    with bench_topics(bootstrap, redis_address, run) as topics:
        inputs = [synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)]
        produce(bootstrap, topics.requests, RequestFactory(run, inputs), count)
        with running(variant, case, topics, count) as process:
            began = found = 0
            cpu_began = 0.0
            deadline = time.monotonic() + 600
            while (found := end_offset(bootstrap, topics.results)) < count:
                if process.poll() is not None and found < count:
                    raise RuntimeError(f"{variant} exited {process.returncode} at {found}")
                if found and not began:
                    began, cpu_began = found, cpu_seconds(process.pid)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant} answered {found} of {count} in 600 s")
                time.sleep(0.1)
            cpu = cpu_seconds(process.pid) - cpu_began if process.poll() is None else float("nan")
            rss = peak_rss_mib(process.pid) if process.poll() is None else float("nan")
        rate = middle_rate(read_results(bootstrap, topics.results, count))  # exactly once each
    return Run(label, variant, round_, rate, cpu / max(1, count - began) * 1e6, rss)


def middle_rate(results: list[ReadResult]) -> float:
    """Results per second between the 10th and the 90th percentile of their timestamps."""
    stamps = sorted(item.timestamp_ms for item in results)
    start, end = stamps[len(stamps) // 10], stamps[len(stamps) * 9 // 10]
    between = sum(1 for stamp in stamps if start < stamp <= end)
    return between / ((end - start) / 1000) if end > start else float("nan")


def latency(
    variant: str, case: Case, label: str, load: float, rate: float, seconds: float
) -> Latency:
    """``variant``'s latency percentiles with requests sent at ``rate`` for ``seconds``."""
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    run = f"torchkafka.latency.{uuid.uuid4().hex[:8]}"
    count = max(1, int(rate * seconds))
    with bench_topics(bootstrap, redis_address, run) as topics:
        inputs = [synthetic_input(case.shape, case.dtype, seed) for seed in range(BATCH)]
        with running(variant, case, topics, count + 1):
            produce(bootstrap, topics.requests, RequestFactory(f"{run}-warm", inputs), 1)
            read_results(bootstrap, topics.results, 1, timeout_s=120)  # joined and warm
            produce(bootstrap, topics.requests, RequestFactory(run, inputs), count, rate)
            results = read_results(bootstrap, topics.results, count + 1, timeout_s=120)
    waits = sorted(
        float(r.timestamp_ms - r.result.meta["sent_ms"])
        for r in results
        if not r.result.id.startswith(f"{run}-warm")
    )

    def at(q: float) -> float:
        return waits[min(len(waits) - 1, int(q * len(waits)))]

    return Latency(label, variant, load, rate, at(0.5), at(0.99), at(0.999))


def latency_table(passes: list[Latency]) -> str:
    lines = [
        "| workload | variant | load | requests/s | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.workload} | {p.variant} | {p.load:.0%} | {p.rate:.0f} | {p.p50_ms:.0f} "
        f"| {p.p99_ms:.0f} | {p.p999_ms:.0f} |"
        for p in passes
    ]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def runs_of(runs: list[Run], workload: str, variant: str) -> list[Run]:
    """The rounds' runs of ``variant`` on ``workload``."""
    return [r for r in runs if r.workload == workload and r.variant == variant]


def vs_smart(runs: list[Run], workload: str, variant: str) -> float:
    """The median over rounds of ``variant``'s throughput over the smart loop's in that round."""
    smart = {r.round: r.msgs_per_s for r in runs_of(runs, workload, "smart")}
    return median([r.msgs_per_s / smart[r.round] for r in runs_of(runs, workload, variant)])


def table(runs: list[Run], bare: dict[str, dict[int, float]]) -> str:
    """The markdown table: medians per workload and variant, and the ratio to smart."""
    lines = [
        "| workload | variant | msg/s | vs smart | CPU µs/msg | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for workload in dict.fromkeys(r.workload for r in runs):
        for variant in VARIANTS:
            these = runs_of(runs, workload, variant)
            lines.append(
                f"| {workload} | {variant} | {median([r.msgs_per_s for r in these]):.0f} "
                f"| {vs_smart(runs, workload, variant):.2f} "
                f"| {median([r.cpu_us_per_msg for r in these]):.0f} "
                f"| {median([r.peak_rss_mib for r in these]):.0f} |"
            )
        for size, rate in bare[workload].items():
            lines.append(f"| {workload} | bare model, batch {size} | {rate:.0f} | | | |")
    return "\n".join(lines)


def plot(runs: list[Run], passes: list[Latency], path: Path) -> None:
    """Throughput by workload and variant (vs smart), and latency percentiles, as one PNG."""
    import matplotlib  # the bench extra; the backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r.workload for r in runs))
    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / len(VARIANTS)
    for offset, variant in enumerate(VARIANTS):
        ratios = [vs_smart(runs, workload, variant) for workload in workloads]
        positions = [i + offset * width for i in range(len(workloads))]
        left.bar(positions, ratios, width, label=variant)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads, fontsize=8)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_ylabel("throughput / smart loop's (median of rounds)")
    left.set_title("throughput")
    left.legend(fontsize=8)
    labels = [f"{p.workload.split()[0]} {p.variant} {p.load:.0%}" for p in passes]
    rows = range(len(passes))
    right.barh(rows, [p.p99_ms for p in passes], color="tab:orange", label="p99")
    right.barh(rows, [p.p50_ms for p in passes], color="tab:blue", label="p50")
    right.set_yticks(list(rows), labels, fontsize=6)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("ms from request to result (log)")
    right.set_title("latency at 50 % and 80 % of each variant's throughput")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workloads",
        default="W0,W1,W2",
        help=f"comma-separated, of {', '.join(WORKLOADS)} (W2-224 takes minutes a round)",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="requests a drain (default: per workload)"
    )
    parser.add_argument("--latency-s", type=float, default=15.0, help="seconds a latency pass")
    parser.add_argument("--out", type=Path, default=Path(".run/bench/loops"))
    args = parser.parse_args()
    names = args.workloads.split(",")
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; use {', '.join(WORKLOADS)}")
    workloads = [
        (f"{name} {WORKLOADS[name][0].label}", WORKLOADS[name][0], args.count or WORKLOADS[name][1])
        for name in names
    ]
    if min(count for _, _, count in workloads) < 4 * POLL:
        parser.error(f"a drain needs at least {4 * POLL} requests (four polls)")
    configure_logging("console", "WARNING")
    runs: list[Run] = []
    bare: dict[str, dict[int, list[float]]] = {
        label: {BATCH: [], LARGE_BATCH: []} for label, _, _ in workloads
    }
    for round_ in range(args.rounds):
        for label, case, count in workloads:
            for size, rates in bare[label].items():
                messages, seconds = bare_rate(case, 2.0, None, size)
                rates.append(messages / seconds)
            for variant in VARIANTS:
                log(f"round {round_ + 1}, {label}: {variant}, {count} requests")
                runs.append(drain(variant, case, label, round_, count))
    passes: list[Latency] = []
    for label, case, _count in workloads:
        for variant in VARIANTS:
            capacity = median([r.msgs_per_s for r in runs_of(runs, label, variant)])
            for load in (0.5, 0.8):
                log(f"latency, {label}: {variant} at {load:.0%} of {capacity:.0f} msg/s")
                passes.append(latency(variant, case, label, load, load * capacity, args.latency_s))
    medians = {
        label: {size: median(rates) for size, rates in sizes.items()}
        for label, sizes in bare.items()
    }
    text = table(runs, medians) + "\n\n" + latency_table(passes)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    report = {
        "runs": [asdict(r) for r in runs],
        "latency": [asdict(p) for p in passes],
        "bare_msgs_per_s": bare,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, passes, args.out / "plot.png")
    written = ", ".join(str(args.out / name) for name in ("table.md", "results.json", "plot.png"))
    print(f"written: {written}")


if __name__ == "__main__":
    main()
