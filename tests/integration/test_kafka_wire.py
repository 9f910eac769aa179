"""Requests and dead-letter headers cross a real broker unchanged."""

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
