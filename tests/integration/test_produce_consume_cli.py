"""`torchkafka produce` and `torchkafka consume` as subprocesses against the real broker."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from tests.integration.helpers import produce, read, run_cli
from torchkafka.codecs import EncodedImage, ModelInfo, Result, decode_request, encode_result


def test_produce_sends_count_synthetic_requests_keyed_by_id_at_a_rate(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    proc = run_cli(
        "produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--count", "25",
        "--shape", "2,3", "--dtype", "int16", "--id-prefix", "cli", "--rate", "100",
        "--deadline-ms", "60000", "--input-name", "features",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = re.fullmatch(
        r"sent 25 messages, [\d.]+ MB in ([\d.]+) s \(\d+ msg/s\), 0 delivery errors\n",
        proc.stdout,
    )
    assert summary is not None, proc.stdout
    assert float(summary[1]) >= 0.2  # 25 at 100/s: 24 intervals of 10 ms
    messages = read(kafka_bootstrap, topic, 25)
    requests = [decode_request(m.value() or b"") for m in messages]
    assert sorted(r.id for r in requests) == sorted(f"cli-{n}" for n in range(25))
    assert all(m.key() == r.id.encode() for m, r in zip(messages, requests, strict=True))
    for request in requests:
        tensor = request.inputs["features"]
        assert isinstance(tensor, torch.Tensor)
        assert (tensor.shape, tensor.dtype) == ((2, 3), torch.int16)
        assert request.deadline_ms == int(request.meta["sent_ms"]) + 60_000


def image_file(path: Path, fmt: str, size: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 128, 255)).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())


def test_produce_cycles_through_a_folder_of_images(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic()
    image_file(tmp_path / "a.png", "PNG", (8, 6))
    image_file(tmp_path / "b.jpeg", "JPEG", (10, 12))
    proc = run_cli(
        "produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--count", "5",
        "--images", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    requests = [decode_request(m.value() or b"") for m in read(kafka_bootstrap, topic, 5)]
    prefix = requests[0].id.rpartition("-")[0]  # a random run id
    assert [r.id for r in requests] == [f"{prefix}-{n}" for n in range(5)]
    images = [r.inputs["x"] for r in requests]
    assert all(isinstance(image, EncodedImage) for image in images)
    formats = [image.format for image in images if isinstance(image, EncodedImage)]
    assert formats == ["png", "jpeg", "png", "jpeg", "png"]


def test_produce_refuses_a_folder_without_images(tmp_path: Path) -> None:
    proc = run_cli("produce", "--topic", "unused", "--images", str(tmp_path))
    assert proc.returncode == 2
    assert "no .jpg, .jpeg or .png files" in proc.stderr


def test_produce_counts_delivery_errors_and_exits_1(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(**{"max.message.bytes": "1000"})
    proc = run_cli(
        "produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--count", "3",
        "--shape", "4000",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "3 delivery errors (first: " in proc.stdout


def result_value(request_id: str, sent_ms: float) -> bytes:
    return encode_result(
        Result(
            id=request_id,
            outputs={"indices": torch.tensor([3, 1]), "probs": torch.tensor([0.75, 0.125])},
            model=ModelInfo("resnet18", "random-init"),
            timings_ms={"queue_ms": 1.0, "infer_ms": 2.0, "total_ms": 4.0},
            meta={"sent_ms": sent_ms},
            worker="host/1",
        )
    )


def test_consume_prints_one_json_line_per_result_and_counts_undecodable_ones(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    sent_ms = time.time() * 1000 - 50
    values = [(b"junk", b"not a result")]
    values += [(f"res-{n}".encode(), result_value(f"res-{n}", sent_ms)) for n in range(12)]
    produce(kafka_bootstrap, topic, values)
    proc = run_cli(
        "consume", "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--count", "12", "--format", "json", "--timeout", "30",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["id"] for line in lines] == [f"res-{n}" for n in range(12)]
    assert lines[0]["outputs"] == {"indices": [3, 1], "probs": [0.75, 0.125]}
    assert lines[0]["model"] == {"name": "resnet18", "version": "random-init"}
    assert lines[0]["timings_ms"]["total_ms"] == 4.0
    assert all(line["end_to_end_ms"] >= 50 for line in lines)
    assert "undecodable message at" in proc.stderr
    assert "results                  12 (1 undecodable messages)" in proc.stderr
    assert "worker total_ms          p50 4.0  p95 4.0  p99 4.0" in proc.stderr
    assert "end-to-end latency (ms)  p50 " in proc.stderr


def test_consume_prints_a_table_and_exits_1_when_too_few_results_arrive(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    sent_ms = time.time() * 1000
    values = [(f"t-{n}".encode(), result_value(f"t-{n}", sent_ms)) for n in range(3)]
    produce(kafka_bootstrap, topic, values)
    proc = run_cli(
        "consume", "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--count", "5", "--timeout", "3",
    )  # fmt: skip
    assert proc.returncode == 1
    header, *rows = proc.stdout.splitlines()[:4]
    assert header.split()[:3] == ["id", "outputs", "model"]
    assert [row.split()[:4] for row in rows] == [
        [f"t-{n}", "top", "3:75.0%", "1:12.5%"] for n in range(3)
    ]
    assert "results                  3 (0 undecodable messages)" in proc.stdout
    assert "only 3 of 5 results" in proc.stderr
