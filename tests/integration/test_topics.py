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


def test_plan_apply_describe_and_lag_against_the_broker(
    kafka_bootstrap: str, kafka_admin: AdminClient, names: dict[str, str]
) -> None:
    group = f"tk-test-topics-{uuid.uuid4().hex[:8]}"
    common = (
        "--input-topic", names["in"], "--output-topic", names["out"],
        "--dead-letter-topic", names["dlq"], "--bootstrap", kafka_bootstrap, "--group-id", group,
    )  # fmt: skip
    declared = ("--partitions", "2", "--topic-config", "dead-letter:retention.ms=86400000")
    plan = run_cli("topics", "plan", *common, *declared)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0].startswith(f"create {names['in']}: partitions 2")
    refused = run_cli("topics", "apply", *common, *declared)
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[-1].startswith("nothing applied")
    applied = run_cli("topics", "apply", *common, *declared, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert run_cli("topics", "plan", *common, *declared).stdout == "nothing to change\n"

    grown = ("--partitions", "3", "--topic-config", "dead-letter:retention.ms=3600000")
    assert run_cli("topics", "apply", *common, *grown, "--yes").returncode == 0
    described = run_cli("topics", "describe", *common).stdout
    assert f"{names['in']}: 3 partitions, replication factor 1" in described
    assert "  partition 2: leader 1, replicas [1], in sync [1]" in described
    assert "max.message.bytes=16847872, retention.ms=3600000" in described
    shrink = run_cli("topics", "plan", *common, "--partitions", "1", *grown[2:])
    assert f"left as it is: {names['in']}: 3 partitions, 1 declared" in shrink.stdout

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(30):
        producer.produce(names["in"], b"x", partition=n % 3)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(names["in"], 0, 4)], asynchronous=False)
    consumer.close()
    lag = run_cli("topics", "lag", *common)
    assert lag.returncode == 0, lag.stderr
    rows = [line.split() for line in lag.stdout.splitlines()[2:5]]
    assert rows == [
        ["0", "4", "10", "6", "-"],
        ["1", "-", "10", "10", "-"],
        ["2", "-", "10", "10", "-"],
    ]
    assert "total lag: 26" in lag.stdout


def test_topics_says_plainly_when_no_broker_answers() -> None:
    done = run_cli(
        "topics", "describe", "--input-topic", "a", "--output-topic", "b",
        "--dead-letter-topic", "c", "--bootstrap", "127.0.0.1:1", "--timeout", "2",
    )  # fmt: skip
    assert done.returncode == 1
    # librdkafka's own request timeout and the command's wait race: either says so
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("torchkafka")]
    assert line.startswith("torchkafka topics describe: cannot describe topic 'a': ")
    assert line.endswith(
        "(no broker answered: check the bootstrap servers and the security settings)"
    )
