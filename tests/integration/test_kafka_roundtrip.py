"""Encoded tensors and dead letters survive a real broker unchanged."""

import subprocess
import sys
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Message, Producer

from torchkafka.codecs import (
    DeadLetterInfo,
    DecodeError,
    Reason,
    dead_letter_headers,
    decode_request,
    read_dead_letter_info,
)
from torchkafka.codecs.testing import malformed_corpus
from torchkafka.worker._roundtrip import run_round_trip


@pytest.mark.parametrize(("shape", "dtype"), [([3, 32, 32], "uint8"), ([4, 8], "bfloat16")])
def test_round_trip_returns_every_tensor_equal(
    kafka_bootstrap: str, new_topic: Callable[..., str], shape: list[int], dtype: str
) -> None:
    topic = new_topic(partitions=3)
    report = run_round_trip(kafka_bootstrap, topic, 300, shape, dtype, progress=False)
    assert (report.sent, report.received, report.mismatched, report.undecodable) == (300, 300, 0, 0)
    assert report.ok


def test_cli_round_trip_exits_zero_and_says_ok(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    command = [sys.executable, "-m", "torchkafka.worker.cli", "roundtrip", "--no-progress"]
    command += ["--bootstrap", kafka_bootstrap, "--topic", topic, "--count", "100"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "received         100" in done.stdout
    assert "OK: every tensor came back equal" in done.stdout


def read_all(bootstrap: str, topic: str, count: int) -> list[Message]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    try:
        for _ in range(60):
            messages += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
            if len(messages) >= count:
                break
    finally:
        consumer.close()
    return messages


def test_malformed_requests_and_dead_letter_headers_cross_kafka_intact(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """What a worker reads is what was written, and dead-letter headers read back."""
    topic = new_topic()
    cases = [case for case in malformed_corpus() if len(case.data) < 900_000]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for offset, case in enumerate(cases):
        info = DeadLetterInfo(
            reason=case.error.reason,
            error=case.name,
            source_topic="requests",
            source_partition=0,
            source_offset=offset,
            attempts=1,
            worker="test",
            time_ms=1,
        )
        headers = dead_letter_headers([("trace", b"t-1")], info)
        producer.produce(topic, value=case.data, key=case.name.encode(), headers=headers)
    assert producer.flush(30) == 0

    messages = read_all(kafka_bootstrap, topic, len(cases))
    assert len(messages) == len(cases)
    by_name = {case.name: case for case in cases}
    for message in messages:
        case = by_name[(message.key() or b"").decode()]
        with pytest.raises(DecodeError) as caught:
            decode_request(message.value() or b"")
        assert type(caught.value) is case.error
        received = message.headers()
        assert isinstance(received, list)
        info = read_dead_letter_info(received)
        assert Reason(info.reason) is case.error.reason
        assert info.error == case.name
        assert ("trace", b"t-1") in received
