"""GPU check: one worker end to end on the GPU, per backend, next to its bare model.

For each backend variant that can run here (eager fp32, eager fp16,
torch.compile fp16, torch.compile fp16 with the runtime's CUDA graphs, and
TensorRT fp16 when torch_tensorrt imports), with resnet18 on uint8
3x224x224 images, imagenet preprocessing and topk:5, at one batch size:

  bare      the worker's runtime (the same ModelRuntime the worker builds:
            optimize(), buckets, CUDA streams/graphs, warm-up) on ready
            batches in pinned staging buffers, pipelined as the inference
            thread does (batch k+1 launched before batch k completes)
  e2e       requests pre-produced to a fresh input topic; one worker
            (run_worker in a thread of this process, dedup in Redis) drains
            them; results per second from the first result to the last, by
            the result messages' timestamps
  p50/p99   end-to-end latency under a paced load: after the backlog, requests
            are produced at ``--paced-load`` (default half) of the e2e rate for
            ``--paced-seconds`` (at most PACED_MAX requests); latency = result
            message timestamp (set when the worker produced it) - the request's
            ``meta.sent_ms`` (set when the producer built it): Kafka in,
            batching, inference, encoding. The producer shares the process.
  h2d GB/s  a pinned staging batch of this size copied to the device with
            non_blocking on a side stream, timed with CUDA events (median of 5
            runs of 20 copies); ``h2d use`` is the share of that bandwidth the
            bare rate needs (bare msg/s x bytes per message / h2d)
  verify    every result (backlog and paced) against eager fp32 on the CPU for
            its input: top-5 probabilities within PROB_ATOL[precision]
            (element-wise, most probable first), and the same top-1 class
            unless eager's top-2 margin is under twice that tolerance (a
            near-tie, counted as exempt); no dead letters. PASS or FAIL.

The model is torchvision's resnet18 with seeded random weights whose
BatchNorm statistics are re-measured on smooth synthetic images and whose
classifier is scaled by 10, so its softmax is as peaked as a trained model's
(top-1 probabilities about 0.1-0.5 over several classes) instead of nearly
uniform; the weights travel to the worker as a state-dict file. No downloads.

Needs the local Kafka and Redis (bench/gpu_check.sh starts them, or `make up`).
Exit status: 0 when every row that ran passed, 1 when any failed, 2 for bad
arguments. Run: python bench/gpu_check.py [--device cpu --quick] [--variants ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import torch
import torch.nn.functional as F
from bench_models import resnet18_with_measured_batchnorm
from e2e_harness import (
    Topics,
    WorkerThread,
    bench_topics,
    end_offset,
    log,
    on_own_thread,
    produce,
    read_results,
    result_rate,
)

from torchkafka.codecs import Result
from torchkafka.worker import Backend, Precision, WorkerConfig, kafka_bootstrap, redis_url
from torchkafka.worker.config import build_config
from torchkafka.worker.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelRuntime,
    load_model,
    parse_model_spec,
    parse_postprocess,
    parse_preprocess,
    resolve_device,
)
from torchkafka.worker.model import build_runtime as build_worker_runtime
from torchkafka.worker.ops import configure_logging
from torchkafka.worker.tools import RequestFactory

SHAPE = (3, 224, 224)
INPUT_DTYPE = "uint8"
MESSAGE_BYTES = math.prod(SHAPE)  # the tensor payload of one request
TOP_K = 5
#: Element-wise tolerance of the top-5 probabilities against eager fp32 on the CPU.
#: fp32 allows for TF32 (cuDNN's default for float32 convolutions on GPUs).
PROB_ATOL: dict[str, float] = {"fp32": 2e-3, "fp16": 2e-2, "bf16": 5e-2}
LOGIT_SCALE = 10.0
#: Most requests of the paced phase (enough for a p99; fewer to produce and read).
PACED_MAX = 2000
INPUT_SEED, BATCHNORM_SEED = 7, 3


@dataclass(frozen=True)
class Variant:
    """One row: a backend configuration of the worker."""

    name: str
    backend: Backend
    precision: Precision
    channels_last: bool = False
    cuda_graphs: bool = False
    compile_mode: str = "default"

    @property
    def static(self) -> bool:
        """Whether it runs at fixed batch sizes (batch buckets)."""
        return self.backend in ("compile", "tensorrt") or self.cuda_graphs


VARIANTS = {
    v.name: v
    for v in (
        Variant("eager-fp32", "eager", "fp32"),
        Variant("eager-fp16", "eager", "fp16", channels_last=True),
        Variant("compile-fp16", "compile", "fp16", channels_last=True),
        Variant("compile-fp16-graphs", "compile", "fp16", channels_last=True, cuda_graphs=True),
        Variant("tensorrt-fp16", "tensorrt", "fp16"),
        Variant("torchscript-fp32", "torchscript", "fp32"),
    )
}
GPU_DEFAULT = ("eager-fp32", "eager-fp16", "compile-fp16", "compile-fp16-graphs", "tensorrt-fp16")
CPU_DEFAULT = ("eager-fp32", "torchscript-fp32")
#: Seconds a variant needs at least (model build twice, warm-ups, traffic);
#: one is skipped when less of the budget is left.
MIN_SECONDS = {"eager": 25.0, "torchscript": 30.0, "compile": 75.0, "tensorrt": 120.0, "int8": 60.0}


@dataclass(frozen=True)
class Settings:
    device: str
    batch: int
    count: int
    pool: int
    bare_s: float
    paced_s: float
    paced_load: float
    budget_s: float
    variants: tuple[str, ...]
    bootstrap: str
    redis_url: str


@dataclass
class Row:
    """One variant's measurements; None where not measured."""

    variant: str
    batch: int
    verdict: str = "SKIP"  # PASS, FAIL or SKIP
    detail: str = ""
    e2e: float | None = None
    bare: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    h2d_gbs: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# The model and its inputs
# ---------------------------------------------------------------------------


def smooth_images(count: int, seed: int) -> torch.Tensor:
    """uint8 [count, 3, 224, 224]: bicubic-upsampled 7x7 noise plus a little pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 7, 7, generator=generator)
    smooth = F.interpolate(coarse, size=SHAPE[1:], mode="bicubic", align_corners=False)
    noisy = smooth + 0.1 * torch.randn(smooth.shape, generator=generator)
    return (noisy * 60 + 128).clamp(0, 255).to(torch.uint8)


def imagenet_normalized(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def write_weights(path: Path, batches: int, batch: int) -> None:
    """Seeded resnet18 weights (see the module docstring) as a state-dict file."""
    model = resnet18_with_measured_batchnorm(
        imagenet_normalized(smooth_images(batch, BATCHNORM_SEED * 100 + n)) for n in range(batches)
    )
    with torch.no_grad():
        for parameter in model.get_submodule("fc").parameters():
            parameter.mul_(LOGIT_SCALE)
    torch.save(model.eval().state_dict(), path)


def worker_config(
    variant: Variant, settings: Settings, weights: Path, run: str, topics: Topics
) -> WorkerConfig:
    """The worker's configuration for ``variant``, in consumer group ``run``."""
    return build_config(
        {
            "model": "torchvision:resnet18",
            "weights": weights,
            "device": settings.device,
            "preprocess": "imagenet",
            "postprocess": f"topk:{TOP_K}",
            "input_shape": SHAPE,
            "input_dtype": INPUT_DTYPE,
            "backend": variant.backend,
            "precision": variant.precision,
            "channels_last": variant.channels_last,
            "compile_mode": variant.compile_mode,
            "batch_buckets": (settings.batch,) if variant.static else (),
            "cuda_graphs": variant.cuda_graphs,
            "max_batch_size": settings.batch,
            "bootstrap": settings.bootstrap,
            "redis_url": settings.redis_url,
            "dedup_ttl_s": 600,
            "metrics_port": 0,  # no HTTP server: nothing to collide with a running worker
            "input_topic": topics.requests,
            "output_topic": topics.results,
            "dead_letter_topic": topics.dead_letters,
            "group_id": run,
        }
    )


def build_runtime(config: WorkerConfig) -> ModelRuntime:
    """The runtime a worker with ``config`` serves with, built by the worker's own code path.

    worker/model/_setup.py's ``build_runtime``, as the worker's start-up calls
    it: load the model, optimize it for the configured backend and precision,
    wrap it in a ``ModelRuntime`` with the buckets and CUDA graphs, warm up.
    """
    return build_worker_runtime(config.model, resolve_device(config.model.device), processes=1)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Eager fp32's top-k per pool input: indices [pool, k] and probabilities [pool, k]."""

    indices: torch.Tensor
    probs: torch.Tensor

    def input_of(self, request_id: str) -> int:
        """The pool input request ``{prefix}-{n}`` carried (RequestFactory cycles the pool)."""
        return int(request_id.rsplit("-", 1)[1]) % self.indices.shape[0]


def reference_top_k(weights: Path, pool: torch.Tensor) -> Reference:
    """Eager fp32 on the CPU (no TF32), through the worker's own pre- and postprocessing."""
    runtime = ModelRuntime(
        load_model(parse_model_spec("torchvision:resnet18"), weights, torch.device("cpu")),
        parse_preprocess("imagenet"),
        parse_postprocess(f"topk:{TOP_K}"),
        torch.device("cpu"),
    )
    rows = [row for chunk in torch.split(pool, 16) for row in runtime.infer(chunk)]
    return Reference(
        torch.stack([row["indices"] for row in rows]), torch.stack([row["probs"] for row in rows])
    )


@dataclass(frozen=True)
class Verdict:
    checked: int
    agree: int  # same top-1 class as eager fp32
    exempt: int  # another top-1 class where eager's top-2 margin is a near-tie
    max_prob_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return (
            self.checked > 0
            and self.agree + self.exempt == self.checked
            and (self.max_prob_diff <= self.atol)
        )

    def summary(self) -> str:
        tie = f", {self.exempt} near-ties" if self.exempt else ""
        return (
            f"top-1 {self.agree}/{self.checked}{tie}, max |dp| {self.max_prob_diff:.1e} "
            f"(atol {self.atol:.0e})"
        )


def verify(results: Sequence[Result], reference: Reference, atol: float) -> Verdict:
    """Compare each result's top-k with eager fp32's for the same input (see the docstring)."""
    agree = exempt = 0
    worst = 0.0
    for result in results:
        i = reference.input_of(result.id)
        indices, probs = result.outputs["indices"], result.outputs["probs"]
        if indices.shape != reference.indices[i].shape or probs.shape != reference.probs[i].shape:
            worst = math.inf
            continue
        worst = max(worst, float((probs.float() - reference.probs[i]).abs().max()))
        if int(indices[0]) == int(reference.indices[i, 0]):
            agree += 1
        elif float(reference.probs[i, 0] - reference.probs[i, 1]) < 2 * atol:
            exempt += 1
    return Verdict(len(results), agree, exempt, worst, atol)


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def bare_rate(runtime: ModelRuntime, batch: torch.Tensor, seconds: float) -> float:
    """Messages per second of ``runtime`` on ready batches, pipelined like the inference thread.

    On a thread of its own, as the worker's inference runs (``on_own_thread``).
    """
    return on_own_thread(lambda: _pipelined_rate(runtime, batch, seconds))


def _pipelined_rate(runtime: ModelRuntime, batch: torch.Tensor, seconds: float) -> float:
    pin = runtime.device.type == "cuda"
    staging = [batch.pin_memory() if pin else batch.clone() for _ in range(2)]
    count = batch.shape[0]
    for buffer in staging:
        runtime.complete(runtime.launch(buffer, count))  # warm
    done = launches = 0
    in_flight = None
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        launched = runtime.launch(staging[launches % 2], count)
        launches += 1
        if in_flight is not None:
            runtime.complete(in_flight)
            done += count
        in_flight = launched
    if in_flight is not None:
        runtime.complete(in_flight)
        done += count
    return done / (time.perf_counter() - start)


def h2d_bandwidth(batch: torch.Tensor, device: torch.device, copies: int = 20) -> float:
    """GB/s of copying pinned ``batch`` to ``device`` (median of 5 timed runs)."""
    pinned = batch.pin_memory()
    target = torch.empty(pinned.shape, dtype=pinned.dtype, device=device)
    stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    rates: list[float] = []
    with torch.cuda.stream(stream):
        for _ in range(3):
            target.copy_(pinned, non_blocking=True)
        for _ in range(5):
            begin = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            begin.record(stream)
            for _ in range(copies):
                target.copy_(pinned, non_blocking=True)
            end.record(stream)
            end.synchronize()
            seconds = float(begin.elapsed_time(end)) / 1000
            rates.append(pinned.numel() * pinned.element_size() * copies / seconds / 1e9)
    return statistics.median(rates)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------
# One variant
# ---------------------------------------------------------------------------


def check_variant(
    variant: Variant,
    settings: Settings,
    weights: Path,
    pool: torch.Tensor,
    reference: Reference,
    deadline: float,
) -> Row:
    """Measure and verify one variant; failures become a FAIL row, never an exception."""
    row = Row(variant.name, settings.batch)
    started = time.monotonic()
    try:
        _measure(row, variant, settings, weights, pool, reference, deadline)
    except Exception as exc:  # reported in the table; the next variant still runs
        row.verdict, row.detail = "FAIL", f"{type(exc).__name__}: {exc}"
        log(f"{variant.name}: FAILED: {exc!r}")
    row.seconds = time.monotonic() - started
    return row


def _measure(
    row: Row,
    variant: Variant,
    settings: Settings,
    weights: Path,
    pool: torch.Tensor,
    reference: Reference,
    deadline: float,
) -> None:
    run = f"torchkafka.gpucheck.{variant.name}.{uuid.uuid4().hex[:8]}"
    batch = pool[torch.arange(settings.batch) % pool.shape[0]].contiguous()
    device = torch.device(settings.device)

    log(f"{variant.name}: building the runtime")
    built = time.monotonic()
    # Topics named but not created: building a runtime connects to nothing.
    runtime = build_runtime(worker_config(variant, settings, weights, run, Topics.named(run)))
    row.notes.append(f"build {time.monotonic() - built:.0f}s")
    log(f"{variant.name}: bare model for {settings.bare_s:.0f} s")
    row.bare = bare_rate(runtime, batch, settings.bare_s)
    del runtime
    if device.type == "cuda":
        torch.cuda.empty_cache()
        row.h2d_gbs = h2d_bandwidth(batch, device)

    with bench_topics(settings.bootstrap, settings.redis_url, run) as topics:
        config = worker_config(variant, settings, weights, run, topics)
        inputs = list(pool.unbind(0))
        log(f"{variant.name}: producing {settings.count} requests")
        produce(settings.bootstrap, topics.requests, RequestFactory(run, inputs), settings.count)
        log(f"{variant.name}: one worker drains them")
        with WorkerThread(config) as worker:
            worker.wait_for_results(settings.count, _left(deadline))
            backlog = read_results(settings.bootstrap, topics.results, settings.count)
            row.e2e = result_rate(backlog)
            rate = max(1.0, settings.paced_load * row.e2e)
            paced = max(10, min(PACED_MAX, round(rate * settings.paced_s)))
            log(f"{variant.name}: {paced} paced requests at {rate:.0f}/s for latency")
            factory = RequestFactory(f"{run}-paced", inputs)
            produce(settings.bootstrap, topics.requests, factory, paced, rate=rate)
            worker.wait_for_results(settings.count + paced, _left(deadline))
        everything = read_results(settings.bootstrap, topics.results, settings.count + paced)
        dead_letters = end_offset(settings.bootstrap, topics.dead_letters)

    latencies = [
        item.timestamp_ms - float(item.result.meta["sent_ms"])
        for item in everything
        if item.result.id.startswith(f"{run}-paced-") and isinstance(item.result.meta, dict)
    ]
    row.p50_ms, row.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
    verdict = verify([item.result for item in everything], reference, PROB_ATOL[variant.precision])
    row.detail = verdict.summary() + (f"; {dead_letters} dead letters" if dead_letters else "")
    row.verdict = "PASS" if verdict.ok and not dead_letters else "FAIL"


def _left(deadline: float) -> float:
    return max(5.0, deadline - time.monotonic())


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

COLUMNS = (
    ("variant", 20),
    ("batch", 6),
    ("e2e msg/s", 10),
    ("bare msg/s", 11),
    ("e2e/bare", 9),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("h2d GB/s", 9),
    ("h2d use", 8),
    ("verify", 7),
)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(rows: Sequence[Row]) -> str:
    """The report: one line per variant, then each row's verification detail."""
    header = "".join(f"{name:<{width}}" if i == 0 else f"{name:>{width}}"
                     for i, (name, width) in enumerate(COLUMNS))  # fmt: skip
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio = row.e2e / row.bare if row.e2e is not None and row.bare else None
        use = (
            row.bare * MESSAGE_BYTES / 1e9 / row.h2d_gbs
            if row.bare is not None and row.h2d_gbs
            else None
        )
        cells = (
            row.variant,
            str(row.batch),
            _number(row.e2e),
            _number(row.bare),
            _number(ratio, 3),
            _number(row.p50_ms, 1),
            _number(row.p99_ms, 1),
            _number(row.h2d_gbs, 1),
            "-" if use is None else f"{use:.1%}",
            row.verdict,
        )
        lines.append(
            "".join(
                f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
                for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
            )
        )
    lines.append("")
    for row in rows:
        notes = ", ".join([*row.notes, f"{row.seconds:.0f}s in all"])
        lines.append(f"{row.variant}: {row.verdict} {row.detail} ({notes})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a CPU smoke run (batch 8, 48 requests)",
    )
    parser.add_argument("--batch", type=int, help="batch size (default 32; --quick 8)")
    parser.add_argument("--count", type=int, help="backlog requests (default 4096; --quick 48)")
    parser.add_argument("--pool", type=int, help="distinct inputs (default 64; --quick 16)")
    parser.add_argument("--bare-seconds", type=float, help="bare timing (default 3; --quick 1)")
    parser.add_argument("--paced-seconds", type=float, help="paced phase (default 4; --quick 2)")
    parser.add_argument("--paced-load", type=float, default=0.5, help="paced rate / e2e rate")
    parser.add_argument("--budget", type=float, default=420, help="seconds for all variants")
    parser.add_argument(
        "--variants",
        help=f"comma-separated, of {', '.join(VARIANTS)} "
        f"(default on cuda: {','.join(GPU_DEFAULT)}; on cpu: {','.join(CPU_DEFAULT)})",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    cpu = args.device == "cpu"
    variants = tuple(args.variants.split(",")) if args.variants else None
    if variants is None:
        variants = CPU_DEFAULT if cpu else GPU_DEFAULT
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    settings = Settings(
        device=args.device,
        batch=args.batch or (8 if quick else 32),
        count=args.count or (48 if quick else 4096),
        pool=args.pool or (16 if quick else 64),
        bare_s=args.bare_seconds or (1.0 if quick else 3.0),
        paced_s=args.paced_seconds or (2.0 if quick else 4.0),
        paced_load=args.paced_load,
        budget_s=args.budget,
        variants=variants,
        bootstrap=kafka_bootstrap(),
        redis_url=redis_url(),
    )
    if min(settings.batch, settings.count, settings.pool) < 1 or settings.paced_load <= 0:
        parser.error("batch, count and pool must be >= 1 and paced-load > 0")
    return settings


def availability(variant: Variant, device: torch.device) -> str | None:
    """Why ``variant`` cannot run on ``device``, or None when it can."""
    if variant.backend == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not importable here"
    if device.type != "cuda" and (variant.backend == "tensorrt" or variant.cuda_graphs):
        return "needs CUDA"
    return None


def run_check(settings: Settings, clock: Callable[[], float] = time.monotonic) -> list[Row]:
    deadline = clock() + settings.budget_s
    device = resolve_device(settings.device)
    if device.type == "cuda":
        log(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="torchkafka-gpucheck-") as folder:
        weights = Path(folder) / "resnet18.pt"
        quick = settings.count < 256
        log("weights: seeded resnet18, BatchNorm statistics measured, classifier scaled")
        write_weights(weights, batches=2, batch=8 if quick else 32)
        pool = smooth_images(settings.pool, INPUT_SEED)
        reference = reference_top_k(weights, pool)
        for name in settings.variants:
            variant = VARIANTS[name]
            why = availability(variant, device)
            left = deadline - clock()
            if why is None and left < MIN_SECONDS[variant.backend] * (0.3 if quick else 1):
                why = f"time budget: {left:.0f}s left"
            if why is not None:
                rows.append(Row(name, settings.batch, "SKIP", why))
                log(f"{name}: skipped ({why})")
                continue
            try:
                row = check_variant(variant, settings, weights, pool, reference, deadline)
            except KeyboardInterrupt:  # SIGINT, or SIGTERM from gpu_check.sh's time limit
                rows.append(Row(name, settings.batch, "FAIL", "interrupted"))
                break
            rows.append(row)
            log(f"{name}: {format_table([row]).splitlines()[2]}")
    return rows


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    configure_logging("console", "WARNING")
    signal.signal(signal.SIGTERM, _interrupt)  # report what was measured, then exit
    started = time.monotonic()
    rows = run_check(settings)
    device = resolve_device(settings.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torchkafka GPU check: {where}, torch {torch.__version__}, resnet18 uint8 "
        f"{'x'.join(map(str, SHAPE))} imagenet topk:{TOP_K}, {settings.count} backlog requests "
        f"per variant, {MESSAGE_BYTES} B tensor payload per message"
    )
    print(
        "e2e: results/s of one in-process worker draining the backlog; bare: the worker's "
        "runtime on ready pinned batches; latency: request built -> result produced, at "
        f"{settings.paced_load:.0%} of the e2e rate; h2d: pinned batch copy (CUDA events)"
    )
    print(format_table(rows))
    print(f"total {time.monotonic() - started:.0f}s")
    return 1 if any(row.verdict == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
