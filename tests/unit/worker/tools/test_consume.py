"""Result rows, summary statistics and the read loop (on a fake consumer and clock)."""

from __future__ import annotations

import json

import pytest
import torch

from torchkafka.client import ResultStream
from torchkafka.codecs import ModelInfo, Result, encode_result
from torchkafka.worker.tools._consume import (
    ResultStats,
    end_to_end_ms,
    format_percentiles,
    json_line,
    percentiles,
    read_results,
    table_row,
)

MODEL = ModelInfo("resnet18", "random-init")


def topk_result(request_id: str = "r-1", meta: object = None) -> Result:
    return Result(
        id=request_id,
        outputs={"indices": torch.tensor([417, 12]), "probs": torch.tensor([0.5, 0.25])},
        model=MODEL,
        timings_ms={"infer_ms": 3.0, "total_ms": 7.5},
        meta=meta,
        worker="host/1",
    )


def test_percentiles_interpolate_within_the_data() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == pytest.approx([50.5, 95.05, 99.01])
    assert percentiles([4.0, 8.0])[2] <= 8.0
    assert percentiles([3.0]) == [3.0, 3.0, 3.0]
    assert percentiles([]) == [0.0, 0.0, 0.0]
    assert format_percentiles([1.0, 3.0], digits=0) == "p50 2  p95 3  p99 3"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [({"sent_ms": 900.0}, 100.0), ({"sent_ms": 950}, 50.0), (None, None), ({"sent_ms": "x"}, None)],
)
def test_end_to_end_latency_comes_from_sent_ms(meta: object, expected: float | None) -> None:
    assert end_to_end_ms(topk_result(meta=meta), 1000.0) == expected


def test_result_stats_count_timings_latency_and_throughput() -> None:
    stats = ResultStats()
    assert stats.throughput() is None
    stats.add(topk_result(meta={"sent_ms": 0.0}), received_s=10.0, received_ms=20.0)
    stats.add(topk_result(), received_s=10.5, received_ms=30.0)
    stats.add(topk_result(meta={"sent_ms": 10.0}), received_s=11.0, received_ms=40.0)
    assert stats.count == 3
    assert stats.throughput() == 2.0  # two intervals in one second
    assert stats.timings_ms == {"infer_ms": [3.0] * 3, "total_ms": [7.5] * 3}
    assert stats.end_to_end_ms == [20.0, 30.0]
    summary = "\n".join(stats.summary())
    assert "2 results/s" in summary
    assert "worker total_ms          p50 7.5" in summary
    assert "end-to-end latency (ms)  p50 25.0" in summary


def test_json_line_shows_topk_values_or_output_shapes() -> None:
    line = json.loads(json_line(topk_result(), 12.3456))
    assert line == {
        "id": "r-1",
        "outputs": {"indices": [417, 12], "probs": [0.5, 0.25]},
        "model": {"name": "resnet18", "version": "random-init"},
        "timings_ms": {"infer_ms": 3.0, "total_ms": 7.5},
        "worker": "host/1",
        "end_to_end_ms": 12.346,
    }
    raw = Result(id="r-2", outputs={"y": torch.zeros(2, 3)}, model=MODEL)
    assert json.loads(json_line(raw, None))["outputs"] == {
        "y": {"dtype": "float32", "shape": [2, 3]}
    }


def test_table_row_lists_the_top_classes_or_the_output_shapes() -> None:
    row = table_row(topk_result(), 20.0)
    assert row.split() == [
        "r-1",
        "top",
        "417:50.0%",
        "12:25.0%",
        "resnet18@random-init",
        "7.5",
        "20.0",
    ]
    raw = Result(id="r-2", outputs={"y": torch.zeros(3), "z": torch.zeros(1, 2)}, model=MODEL)
    assert table_row(raw, None).split()[1:5] == ["y[3],", "z[1,", "2]", "resnet18@random-init"]


class FakeMessage:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value = value
        self._offset = offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "results"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    """Each poll window (0.2 s) brings the next of ``batches``, then nothing.

    ``poll`` returns a window's first message; ``consume(n, 0)`` what is left
    of it, up to ``n``. A poll with nothing there takes its whole timeout.
    """

    def __init__(self, batches: list[list[bytes]], clock: list[float]) -> None:
        self.batches = batches
        self.clock = clock
        self.asked: list[int] = []  # messages asked for, per window: 1 (poll) + consume's n
        self.offset = 0
        self.ready: list[FakeMessage] = []

    def poll(self, timeout: float) -> FakeMessage | None:
        self.clock[0] += timeout
        batch = self.batches.pop(0) if self.batches else []
        self.ready = [FakeMessage(value, self.offset + n) for n, value in enumerate(batch)]
        self.offset += len(batch)
        self.asked.append(1)
        return self.ready.pop(0) if self.ready else None

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        assert timeout == 0
        self.asked[-1] += num_messages
        taken, self.ready = self.ready[:num_messages], self.ready[num_messages:]
        return taken


def encoded(*ids: str) -> list[bytes]:
    return [encode_result(topk_result(request_id)) for request_id in ids]


def test_read_results_stops_at_count_and_never_asks_for_more() -> None:
    clock = [0.0]
    consumer = FakeConsumer([encoded("a", "b"), encoded("c", "d")], clock)
    seen: list[str] = []
    stats = read_results(
        ResultStream(consumer, on_unreadable=pytest.fail),  # type: ignore[arg-type]
        lambda result, _latency: seen.append(result.id),
        count=3,
        idle_timeout_s=5,
        warn=pytest.fail,
        clock=lambda: clock[0],
    )
    assert seen == ["a", "b", "c"]
    assert stats.count == 3
    assert consumer.asked == [3, 1]


def test_read_results_counts_undecodable_messages_and_stops_when_idle() -> None:
    clock = [0.0]
    consumer = FakeConsumer([[b"garbage", *encoded("a")], [b"\x81"]], clock)
    warnings: list[str] = []
    stats = read_results(
        ResultStream(consumer, on_unreadable=warnings.append),  # type: ignore[arg-type]
        lambda _result, _latency: None,
        count=None,
        idle_timeout_s=1.0,
        warn=pytest.fail,
        clock=lambda: clock[0],
    )
    assert (stats.count, stats.undecodable) == (1, 2)
    assert warnings[0].startswith("undecodable message at results[0]@0: malformed_msgpack")
    # The last message came at 0.4 s; reading stops one timeout (give or take a poll) later.
    assert 1.4 - 1e-9 < clock[0] < 1.6 + 1e-9
