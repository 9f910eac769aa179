"""Codec throughput next to memcpy, measured side by side in one run.

For each payload size it times, in interleaved rounds:
  memcpy  ctypes.memmove of the payload into a preallocated buffer
  decode  decode_request(bytes) -> a tensor viewing the payload
  encode  Encoder.request(Request) -> bytes
and prints GB/s of payload for each plus decode/memcpy and encode/memcpy ratios
(medians over rounds). Run: python bench/codec_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchkafka.codecs import Encoder, Request, decode_request


@dataclass(frozen=True)
class Case:
    label: str
    tensor: torch.Tensor


CASES = [
    Case("1 KiB uint8", torch.randint(0, 255, (1024,), dtype=torch.uint8)),
    Case("150 KiB 3x224x224 uint8", torch.randint(0, 255, (3, 224, 224), dtype=torch.uint8)),
    Case("4 MiB float32", torch.randn(1024, 1024, dtype=torch.float32)),
]


def seconds_per_call(fn: Callable[[], object], budget_s: float) -> float:
    """Mean seconds per call over a loop of about ``budget_s`` seconds."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return elapsed / calls
        calls *= 2


def measure(case: Case, rounds: int, budget_s: float) -> dict[str, list[float]]:
    payload = case.tensor.numpy().tobytes()
    size = len(payload)
    src = ctypes.create_string_buffer(payload, size)
    dst = ctypes.create_string_buffer(size)
    encoder = Encoder()
    request = Request(id="bench-0001", inputs={"x": case.tensor})
    message = encoder.request(request)
    ops: dict[str, Callable[[], object]] = {
        "memcpy": lambda: ctypes.memmove(dst, src, size),
        "decode": lambda: decode_request(message),
        "encode": lambda: encoder.request(request),
    }
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            rates[name].append(size / seconds_per_call(op, budget_s) / 1e9)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per timed loop")
    args = parser.parse_args()
    torch.manual_seed(0)
    header = f"{'payload':<26}{'memcpy GB/s':>12}{'decode GB/s':>12}{'encode GB/s':>12}"
    print(header + f"{'decode/memcpy':>15}{'encode/memcpy':>15}")
    for case in CASES:
        rates = measure(case, args.rounds, args.budget)
        med = {name: statistics.median(values) for name, values in rates.items()}
        print(
            f"{case.label:<26}{med['memcpy']:>12.2f}{med['decode']:>12.2f}{med['encode']:>12.2f}"
            f"{med['decode'] / med['memcpy']:>14.2f}x{med['encode'] / med['memcpy']:>14.2f}x"
        )


if __name__ == "__main__":
    main()
