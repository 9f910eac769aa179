"""The polling loop's use of librdkafka that only a real broker can show."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.helpers import produce
from torchkafka.worker.kafka import assign_paused


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_partitions_assigned_while_paused_stay_paused_until_resumed(
    kafka_bootstrap: str, new_topic: Callable[..., str], strategy: str
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [(str(n).encode(), b"x") for n in range(20)])
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"tk-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": strategy,
        }
    )
    assigned: list[TopicPartition] = []

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assign_paused(consumer, partitions)
        assigned.extend(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    try:
        deadline = time.monotonic() + 30
        while len(assigned) < 2 and time.monotonic() < deadline:
            assert not consumer.consume(100, timeout=0.2), "read from a paused partition"
        assert len(assigned) == 2, "no assignment within 30 s"
        deadline = time.monotonic() + 1.5  # librdkafka would have fetched by now
        while time.monotonic() < deadline:
            assert not consumer.consume(100, timeout=0.2), "read from a paused partition"

        consumer.resume(assigned)
        read = 0
        deadline = time.monotonic() + 30
        while read < 20 and time.monotonic() < deadline:
            read += sum(m.error() is None for m in consumer.consume(100, timeout=0.2))
        assert read == 20
    finally:
        consumer.close()
