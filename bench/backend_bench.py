"""Inference backends side by side on the CPU: bare-model throughput and top-1 agreement.

For each case (resnet18 at 64x64 and 224x224, the bench MLP on float32[64])
every backend is built once with ``optimize`` (its build time printed), then
timed per batch size in interleaved rounds: each round runs every backend for
about ``--slice-s`` seconds, so machine noise hits them all alike. Printed:
msg/s (median over rounds), the speedup over fp32 eager (median of the
per-round ratios) and the top-1 agreement with fp32 eager on inputs that are
neither the int8 calibration inputs nor the timed ones. No Kafka, no Redis,
no downloads.

Agreement only means something for a model with a trained model's margins:
a random-init resnet18's logits are nearly tied, so any rounding flips its
top-1. The resnet18 here is trained, briefly, on the CPU, on a synthetic
100-class task (``bench_models.Recipe``: smooth random prototypes plus
noise, at 64x64, a noise level where fp32 classifies about 92% of held-out
images right) and cached under ~/.cache/torchkafka/bench/ (the first run
trains it, for 2-3.5 minutes on 2 cores). Agreement is measured on held-out
images of that task: drawn like the calibration images, from other seeds.
At 224x224 the same weights are only timed: trained at 64x64, the model is
no classifier at 224x224 (about 2% right), and training at 224x224 costs
12x more per image, so that row's agreement is n/a. It is a proxy: check
int8 on the real model and data before relying on it.

Run: python bench/backend_bench.py [--quick] [--cases ...] [--batch-sizes 1,8,32]
     [--backends ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from bench_models import MLP_FEATURES, Recipe, mlp, trained_resnet18
from torch import nn

from torchkafka.worker import StartupError
from torchkafka.worker.model import OptimizeOptions, optimize

CPU = torch.device("cpu")
# Disjoint seeds: calibration, agreement, timing and example inputs never coincide.
# Training draws from bench_models.TRAIN_SEED on, far from all of these.
CALIBRATION_SEED, TEST_SEED, TIMING_SEED, EXAMPLE_SEED = 1000, 2000, 3000, 4000
#: The trained resnet18's recipe (bench_models.Recipe's defaults: 100 classes,
#: 64x64, noise 2.0, 300 steps), fixed before int8's agreement was measured.
RECIPE = Recipe()


Sampler = Callable[[int, int], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], tuple[nn.Module, Sampler]]  # the model and its inputs (and labels)
    image: bool
    agreement: bool = True  # False: the model is no classifier of these inputs


@dataclass(frozen=True)
class Variant:
    name: str
    options: OptimizeOptions


VARIANTS = [
    Variant("eager", OptimizeOptions()),
    Variant("channels_last", OptimizeOptions(channels_last=True)),
    Variant("torchscript", OptimizeOptions("torchscript")),
    Variant("compile", OptimizeOptions("compile")),
    Variant("bf16", OptimizeOptions("eager", "bf16")),
    Variant("int8", OptimizeOptions("int8")),
]


def resnet18_case(size: int) -> tuple[nn.Module, Sampler]:
    """The trained resnet18 and its task's images (and classes) at ``size``."""
    return trained_resnet18(RECIPE), RECIPE.task(size).sample


def mlp_case() -> tuple[nn.Module, Sampler]:
    def sample(count: int, seed: int) -> tuple[torch.Tensor, None]:
        return torch.randn(count, MLP_FEATURES, generator=torch.Generator().manual_seed(seed)), None

    return mlp(), sample


CASES = {
    "resnet18-64": Case("resnet18-64", lambda: resnet18_case(RECIPE.size), image=True),
    "resnet18-224": Case("resnet18-224", lambda: resnet18_case(224), image=True, agreement=False),
    "mlp": Case("mlp", mlp_case, image=False),
}


@dataclass
class Built:
    variant: Variant
    module: nn.Module | None
    build_s: float
    failure: str = ""


def build_all(
    eager: nn.Module,
    sample: Sampler,
    case: Case,
    variants: Sequence[Variant],
    args: argparse.Namespace,
) -> list[Built]:
    example = sample(max(args.batch_sizes), EXAMPLE_SEED)[0]
    calibration = list(torch.split(sample(args.calibration_rows, CALIBRATION_SEED)[0], 32))
    built = []
    for variant in variants:
        if variant.options.channels_last and not case.image:
            continue
        log(f"{case.name}: building {variant.name}")
        start = time.perf_counter()
        try:
            module: nn.Module | None = optimize(
                copy.deepcopy(eager), variant.options, example, CPU, calibration,
                batch_sizes=args.batch_sizes,
            )  # fmt: skip
            failure = ""
        except StartupError as exc:
            module, failure = None, str(exc)
        built.append(Built(variant, module, time.perf_counter() - start, failure))
    return built


def throughputs(
    built: Sequence[Built], batch: torch.Tensor, rounds: int, slice_s: float
) -> dict[str, list[float]]:
    """msg/s of each built module per round, the modules interleaved within a round."""
    ready = {b.variant.name: b.module for b in built if b.module is not None}
    calls = {name: _calls_per_slice(module, batch, slice_s) for name, module in ready.items()}
    rates: dict[str, list[float]] = {name: [] for name in ready}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, module in ready.items():
                start = time.perf_counter()
                for _ in range(calls[name]):
                    module(batch)
                rates[name].append(calls[name] * batch.shape[0] / (time.perf_counter() - start))
    return rates


def _calls_per_slice(module: nn.Module, batch: torch.Tensor, slice_s: float) -> int:
    with torch.inference_mode():
        module(batch)  # warm
        start = time.perf_counter()
        module(batch)
        once = time.perf_counter() - start
    return max(1, round(slice_s / once))


def run_case(case: Case, args: argparse.Namespace) -> list[str]:
    log(f"{case.name}: preparing the model")
    eager, sample = case.build()
    variants = [v for v in VARIANTS if v.name in args.backends]
    built = build_all(eager, sample, case, variants, args)
    columns: dict[str, list[str]] = {b.variant.name: [] for b in built}
    for size in args.batch_sizes:
        log(f"{case.name}: timing batch size {size}")
        batch = sample(size, TIMING_SEED + size)[0]
        rates = throughputs(built, batch, args.rounds, args.slice_s)
        for b in built:
            own = rates.get(b.variant.name)
            if own is None:
                columns[b.variant.name].append(f"{'n/a':>17}")
                continue
            ratios = (r / e for r, e in zip(own, rates["eager"], strict=True))
            cell = f"{statistics.median(own):>10.0f} {statistics.median(ratios):>5.2f}x"
            columns[b.variant.name].append(cell)
    predictions: dict[str, torch.Tensor] = {}
    labels = None
    if case.agreement:
        inputs, labels = sample(args.agreement_rows, TEST_SEED)
        predictions = top1(built, inputs)
    lines = []
    for b in built:
        found = predictions.get(b.variant.name)
        agree = "n/a" if found is None else f"{share(found, predictions['eager']):.2%}"
        row = " ".join(columns[b.variant.name])
        lines.append(f"{case.name:<13} {b.variant.name:<14} {b.build_s:>7.1f} {row} {agree:>7}")
        if b.failure:
            lines.append(f"{'':<13} {b.variant.name} not built: {b.failure}")
    if labels is not None:
        accuracy = share(predictions["eager"], labels)
        held_out = f"the {args.agreement_rows} held-out images"
        lines.append(f"{'':<13} (fp32 eager accuracy on {held_out}: {accuracy:.1%})")
    if not case.agreement:
        lines.append(
            f"{'':<13} (agreement n/a: the model is trained at {RECIPE.size}x{RECIPE.size})"
        )
    return lines


def top1(built: Sequence[Built], inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each built module's top-1 class per row of ``inputs``."""
    found = {}
    with torch.inference_mode():
        for b in built:
            if b.module is not None:
                chunks = torch.split(inputs, 32)
                found[b.variant.name] = torch.cat([b.module(c).argmax(dim=1) for c in chunks])
    return found


def share(found: torch.Tensor, expected: torch.Tensor) -> float:
    return (found == expected).float().mean().item()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds, fewer rows")
    parser.add_argument("--cases", type=comma_list, default=list(CASES), help="comma-separated")
    parser.add_argument(
        "--backends", type=comma_list, default=[v.name for v in VARIANTS], help="comma-separated"
    )
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: sorted({int(size) for size in comma_list(text)}),
        default=[1, 8, 32],
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slice-s", type=float, default=0.5, help="seconds per backend a round")
    parser.add_argument("--agreement-rows", type=int, default=2048)
    parser.add_argument("--calibration-rows", type=int, default=256)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.slice_s, args.agreement_rows, args.calibration_rows = 2, 0.1, 256, 64
    unknown = set(args.cases) - CASES.keys() | {"eager"} - set(args.backends)
    if unknown:
        parser.error(f"unknown cases, or eager missing from --backends: {sorted(unknown)}")
    capability = torch.backends.cpu.get_cpu_capability()
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {capability}")
    sizes = " ".join(f"{f'bs={size} msg/s':>10} {'speed':>6}" for size in args.batch_sizes)
    header = f"{'case':<13} {'backend':<14} {'build_s':>7} {sizes} {'top-1':>7}"
    lines = [header]
    for name in args.cases:
        lines.extend(run_case(CASES[name], args))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
