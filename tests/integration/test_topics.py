"""Size limits on the real broker: ``torchkafka topics create`` sets them, the broker takes
a request at the worker's limit and its dead letter (not more), and the consumer limits
read such a request compressed with zstd but refuse a zstd bomb."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

# The admin package re-exports these without __all__ listing them (mypy strict).
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tests.integration.helpers import run_cli
from torchkafka.codecs import DeadLetterInfo, dead_letter_headers
from torchkafka.topology import SizeLimits, delete_topics

LIMITS = SizeLimits()
Headers = list[tuple[str, str | bytes | None]]


@pytest.fixture
def names(kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    topics = {kind: f"tk-test-topics-{run}-{kind}" for kind in ("in", "out", "dlq")}
    yield topics
    delete_topics(kafka_admin, list(topics.values()))


def max_message_bytes(admin: AdminClient, topic: str) -> int:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return int(configs["max.message.bytes"].value)


def produced(
    bootstrap: str, topic: str, value: bytes, headers: Headers, limit: int = 100_000_000
) -> str:
    """The delivery's error name, or "ok"; the producer's own ``limit`` is the broker's
    to enforce unless given."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": limit})
    errors: list[KafkaError | None] = []
    key = b"k" * 256
    report = errors.append
    producer.produce(topic, value, key, headers=headers, on_delivery=lambda e, _m: report(e))
    assert producer.flush(60) == 0
    (error,) = errors
    return "ok" if error is None else error.name()


def test_topics_create_aligns_the_size_limits_and_the_broker_holds_them(
    kafka_bootstrap: str, kafka_admin: AdminClient, names: dict[str, str]
) -> None:
    done = run_cli(
        "topics", "create", "--input-topic", names["in"], "--output-topic", names["out"],
        "--dead-letter-topic", names["dlq"], "--bootstrap", kafka_bootstrap,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {kind: max_message_bytes(kafka_admin, name) for kind, name in names.items()} == {
        "in": LIMITS.input_record_bytes,
        "out": LIMITS.output_record_bytes,
        "dlq": LIMITS.output_record_bytes,
    }
    # A request at the worker's limit, with a long key and 32 KiB of headers.
    request = bytes(LIMITS.max_message_bytes)
    headers: Headers = [(f"h{i}", bytes(1024)) for i in range(32)]
    assert produced(kafka_bootstrap, names["in"], request, headers) == "ok"
    over = bytes(LIMITS.input_record_bytes)
    assert produced(kafka_bootstrap, names["in"], over, []) == "MSG_SIZE_TOO_LARGE"
    # Its dead letter, the error text at its longest, through the worker producer's limit.
    info = DeadLetterInfo("message_too_large", "e" * 10_000, names["in"], 0, 0, 1, "w", 0)
    letter = dead_letter_headers(headers, info)
    limit = LIMITS.producer_message_bytes
    assert produced(kafka_bootstrap, names["dlq"], request, letter, limit) == "ok"


def test_the_consumer_limits_read_a_zstd_request_at_the_limit_and_refuse_a_zstd_bomb(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """librdkafka decompresses a zstd batch up to receive.message.max.bytes at most (a gzip
    one in full, whatever its size); with the worker's settings a request at its limit
    still reads, and a batch inflating to more than the cap is an error, not a record."""
    topic = new_topic(**{"max.message.bytes": str(LIMITS.input_record_bytes)})
    bomb = int(LIMITS.consumer()["receive.message.max.bytes"]) + 1
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "compression.type": "zstd", "linger.ms": 0}
        | {"message.max.bytes": 1_000_000_000}
    )
    for size in (LIMITS.max_message_bytes, bomb):
        producer.produce(topic, bytes(size))
        assert producer.flush(60) == 0
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"limits-{uuid.uuid4()}"}
        | LIMITS.consumer()
    )
    read = []
    try:
        for offset in (0, 1):
            consumer.assign([TopicPartition(topic, 0, offset)])
            (message,) = consumer.consume(1, timeout=30)
            error = message.error()
            read.append(error.name() if error is not None else len(message))
    finally:
        consumer.close()
    assert read == [LIMITS.max_message_bytes, "_BAD_COMPRESSION"]
