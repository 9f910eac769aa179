"""Reading results: per-result lines and summary statistics, on the client's ``ResultStream``.

``ResultStats`` accumulates counts, arrival times, the results' timings and
end-to-end latency (from the ``sent_ms`` a producer put in ``meta``);
``read_results`` drives ``torchkafka consume``, whose rows come from
``json_line`` and ``table_row``. The demo uses the statistics.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import torch

from torchkafka.client import ResultStream, open_results
from torchkafka.codecs import Result

OutputFormat = Literal["table", "json"]
#: The percentiles every latency summary shows.
PERCENTILES = (50, 95, 99)
#: Undecodable messages warned about one by one; the rest are only counted.
WARNED_UNDECODABLE = 5


def percentiles(values: Sequence[float]) -> list[float]:
    """p50, p95 and p99 of ``values`` (interpolated within the data; 0.0 when empty)."""
    if len(values) < 2:
        return [values[0] if values else 0.0] * len(PERCENTILES)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in PERCENTILES]


def format_percentiles(values: Sequence[float], digits: int = 1) -> str:
    """``p50 X  p95 Y  p99 Z``."""
    return "  ".join(
        f"p{p} {v:.{digits}f}" for p, v in zip(PERCENTILES, percentiles(values), strict=True)
    )


def end_to_end_ms(result: Result, received_ms: float) -> float | None:
    """Milliseconds since the request's ``meta["sent_ms"]``; None when it carried none."""
    meta = result.meta
    sent = meta.get("sent_ms") if isinstance(meta, Mapping) else None
    if isinstance(sent, int | float) and not isinstance(sent, bool):
        return received_ms - sent
    return None


@dataclass(slots=True)
class ResultStats:
    """Counts, arrival times and latencies of the results read so far."""

    count: int = 0
    undecodable: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    #: Every timing name the results reported (``total_ms``, ``infer_ms``...) -> values.
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    end_to_end_ms: list[float] = field(default_factory=list)

    def add(self, result: Result, received_s: float, received_ms: float) -> float | None:
        """Count ``result``, received at monotonic ``received_s`` / Unix ``received_ms``.

        Returns its end-to-end latency in ms (None without ``sent_ms``).
        """
        if not self.count:
            self.first_s = received_s
        self.count += 1
        self.last_s = received_s
        for name, value in result.timings_ms.items():
            self.timings_ms.setdefault(name, []).append(value)
        latency = end_to_end_ms(result, received_ms)
        if latency is not None:
            self.end_to_end_ms.append(latency)
        return latency

    def throughput(self) -> float | None:
        """Results per second between the first and the last; None with fewer than two."""
        span = self.last_s - self.first_s
        return (self.count - 1) / span if self.count > 1 and span > 0 else None

    def summary(self) -> list[str]:
        """The summary lines ``torchkafka consume`` prints."""
        rate = self.throughput()
        lines = [
            f"  results                  {self.count} ({self.undecodable} undecodable messages)",
            "  throughput               "
            + (
                f"{rate:.0f} results/s (first to last result, {self.last_s - self.first_s:.1f} s)"
                if rate is not None
                else "n/a (fewer than two results)"
            ),
        ]
        if self.timings_ms.get("total_ms"):
            lines.append(
                f"  worker total_ms          {format_percentiles(self.timings_ms['total_ms'])}"
            )
        if self.end_to_end_ms:
            lines.append(f"  end-to-end latency (ms)  {format_percentiles(self.end_to_end_ms)}")
        return lines


def describe_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Top-k outputs as their values; any others as name -> dtype and shape."""
    if _is_topk(outputs):
        return {
            "indices": outputs["indices"].tolist(),
            "probs": [round(p, 6) for p in outputs["probs"].tolist()],
        }
    return {
        name: {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
        for name, tensor in outputs.items()
    }


def json_line(result: Result, latency_ms: float | None) -> str:
    """One result as a JSON object on one line."""
    line: dict[str, Any] = {
        "id": result.id,
        "outputs": describe_outputs(result.outputs),
        "model": {"name": result.model.name, "version": result.model.version},
        "timings_ms": dict(result.timings_ms),
        "worker": result.worker,
    }
    if latency_ms is not None:
        line["end_to_end_ms"] = round(latency_ms, 3)
    return json.dumps(line)


TABLE_HEADER = f"{'id':<24} {'outputs':<48} {'model':<24} {'total ms':>9} {'e2e ms':>9}"


def table_row(result: Result, latency_ms: float | None) -> str:
    """One result as a row under ``TABLE_HEADER``."""
    outputs = result.outputs
    if _is_topk(outputs):
        pairs = zip(outputs["indices"].tolist(), outputs["probs"].tolist(), strict=True)
        shown = "top " + " ".join(f"{index}:{prob:.1%}" for index, prob in pairs)
    else:
        shown = ", ".join(f"{name}{list(tensor.shape)}" for name, tensor in outputs.items())
    model = f"{result.model.name}@{result.model.version}"
    total = result.timings_ms.get("total_ms")
    total_text = "-" if total is None else f"{total:.1f}"
    latency_text = "-" if latency_ms is None else f"{latency_ms:.1f}"
    return f"{result.id:<24} {shown:<48} {model:<24} {total_text:>9} {latency_text:>9}"


def _is_topk(outputs: Mapping[str, torch.Tensor]) -> bool:
    """The shape ``topk:K`` postprocessing gives: ``indices`` and ``probs`` of length K."""
    if set(outputs) != {"indices", "probs"}:
        return False
    indices, probs = outputs["indices"], outputs["probs"]
    return indices.dim() == 1 and indices.shape == probs.shape


def read_results(
    stream: ResultStream,
    emit: Callable[[Result, float | None], None],
    *,
    count: int | None,
    idle_timeout_s: float,
    warn: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> ResultStats:
    """``emit`` results until ``count`` of them, or ``idle_timeout_s`` without a message.

    A message that is not a result is counted (``undecodable``, from the
    stream) and not fatal. A dead letter (a stream that reads them) is
    ``warn``-ed about. Ctrl-C stops reading.
    """
    stats = ResultStats()
    last_message_s = clock()
    try:
        while (count is None or stats.count < count) and (
            clock() - last_message_s < idle_timeout_s
        ):
            wanted = 500 if count is None else min(500, count - stats.count)
            unreadable = stream.unreadable
            outcomes = stream.poll(0.2, wanted)
            if outcomes or stream.unreadable > unreadable:
                last_message_s = clock()
            for outcome in outcomes:
                if isinstance(outcome, Result):
                    emit(outcome, stats.add(outcome, last_message_s, time.time() * 1000))
                else:
                    warn(str(outcome))
            stats.undecodable = stream.unreadable
    except KeyboardInterrupt:
        warn("interrupted")
    return stats


@dataclass(frozen=True, slots=True)
class ConsumeSettings:
    """What ``torchkafka consume`` reads, how it prints, and when it stops."""

    connection: Mapping[str, str]  # librdkafka settings: bootstrap, security
    topic: str
    group_id: str
    from_beginning: bool
    output_format: OutputFormat
    idle_timeout_s: float
    count: int | None = None  # None: until idle or interrupted


def run_consume(
    settings: ConsumeSettings, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """``torchkafka consume``: 0, or 1 when ``count`` results did not arrive."""

    def warn(text: str) -> None:
        print(f"warning: {text}", file=err, flush=True)

    row = json_line if settings.output_format == "json" else table_row

    def emit(result: Result, latency_ms: float | None) -> None:
        print(row(result, latency_ms), file=out, flush=True)

    warned = 0

    def unreadable(text: str) -> None:
        nonlocal warned
        warned += 1
        if warned <= WARNED_UNDECODABLE:
            warn(text)

    stream = open_results(
        settings.connection,
        settings.topic,
        group_id=settings.group_id,
        from_beginning=settings.from_beginning,
        on_unreadable=unreadable,
    )
    with stream:
        if settings.output_format == "table":
            print(TABLE_HEADER, file=out)
        stats = read_results(
            stream, emit, count=settings.count, idle_timeout_s=settings.idle_timeout_s, warn=warn
        )
    # JSON lines stay alone on stdout; the table's summary follows the table.
    summary_file = err if settings.output_format == "json" else out
    print("\n".join(["", *stats.summary()]), file=summary_file)
    if settings.count is not None and stats.count < settings.count:
        print(f"only {stats.count} of {settings.count} results arrived", file=err)
        return 1
    return 0
