"""Reading results: a reader that has joined its group, per-result lines, summary statistics.

``open_reader`` subscribes a consumer and waits for its partitions;
``ResultStats`` accumulates counts, arrival times, the results' timings and
end-to-end latency (from the ``sent_ms`` a producer put in ``meta``);
``read_results`` drives ``torchkafka consume``, whose rows come from
``json_line`` and ``table_row``. The demo uses the reader and the statistics.
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
from confluent_kafka import Consumer, Message, TopicPartition

from torchkafka.codecs import DecodeError, Result, decode_result

OutputFormat = Literal["table", "json"]
#: The percentiles every latency summary shows.
PERCENTILES = (50, 95, 99)
#: Undecodable messages warned about one by one; the rest are only counted.
WARNED_UNDECODABLE = 5


def open_reader(
    connection: Mapping[str, str],
    topics: Sequence[str],
    group_id: str,
    *,
    from_beginning: bool,
    join_timeout_s: float = 30.0,
) -> Consumer:
    """A consumer of ``topics`` that has its partitions (or ``join_timeout_s`` passed).

    Without ``from_beginning`` a new group starts at the end of each
    partition, so join before producing what it should read. Offsets are never
    committed: a reader does not change where the group's next reader starts.
    It reads committed messages only: an exactly-once worker's aborted results
    are never shown.
    """
    consumer = Consumer(
        {
            **connection,
            "group.id": group_id,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(list(topics))
    deadline = time.monotonic() + join_timeout_s
    while not consumer.assignment() and time.monotonic() < deadline:
        for message in consumer.consume(1, timeout=0.2):  # joins the group
            _rewind(consumer, message)  # read while joining: the caller reads it again
    return consumer


def _rewind(consumer: Consumer, message: Message) -> None:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if message.error() is None and topic and partition is not None and offset is not None:
        consumer.seek(TopicPartition(topic, partition, offset))


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
    reader: Consumer,
    emit: Callable[[Result, float | None], None],
    *,
    count: int | None,
    idle_timeout_s: float,
    warn: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> ResultStats:
    """Decode and ``emit`` results until ``count`` of them, or ``idle_timeout_s`` without a message.

    A message that is not a result is counted (``undecodable``) and
    ``warn``-ed about (the first few), never fatal. Ctrl-C stops reading.
    """
    stats = ResultStats()
    last_message_s = clock()
    try:
        while (count is None or stats.count < count) and (
            clock() - last_message_s < idle_timeout_s
        ):
            wanted = 500 if count is None else min(500, count - stats.count)
            for message in reader.consume(wanted, timeout=0.2):
                error = message.error()
                if error is not None:
                    warn(f"consumer error: {error}")
                    continue
                last_message_s = clock()
                _take(message, stats, emit, warn, last_message_s)
    except KeyboardInterrupt:
        warn("interrupted")
    return stats


def _take(
    message: Message,
    stats: ResultStats,
    emit: Callable[[Result, float | None], None],
    warn: Callable[[str], None],
    received_s: float,
) -> None:
    try:
        result = decode_result(message.value() or b"")
    except DecodeError as exc:
        stats.undecodable += 1
        if stats.undecodable <= WARNED_UNDECODABLE:
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            warn(f"undecodable message at {where}: {exc.reason}: {exc}")
        return
    emit(result, stats.add(result, received_s, time.time() * 1000))


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

    reader = open_reader(
        settings.connection,
        [settings.topic],
        settings.group_id,
        from_beginning=settings.from_beginning,
    )
    try:
        if settings.output_format == "table":
            print(TABLE_HEADER, file=out)
        stats = read_results(
            reader, emit, count=settings.count, idle_timeout_s=settings.idle_timeout_s, warn=warn
        )
    finally:
        reader.close()
    # JSON lines stay alone on stdout; the table's summary follows the table.
    summary_file = err if settings.output_format == "json" else out
    print("\n".join(["", *stats.summary()]), file=summary_file)
    if settings.count is not None and stats.count < settings.count:
        print(f"only {stats.count} of {settings.count} results arrived", file=err)
        return 1
    return 0
