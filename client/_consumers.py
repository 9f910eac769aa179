"""Consumers of the result and dead-letter topics: assigned at their ends, or in a group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed


def result_consumer(
    settings: Mapping[str, str], group_id: str | None = None, *, from_beginning: bool = False
) -> Consumer:
    """A consumer that reads committed messages only and never commits.

    Without ``group_id`` it gets a throwaway one and is meant to be assigned
    (it never joins). An exactly-once worker's aborted results are never seen.
    """
    return Consumer(
        {
            **settings,
            "group.id": group_id or f"torchkafka-client-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )


def end_positions(
    consumer: Consumer, topics: Sequence[str], timeout_s: float
) -> list[TopicPartition]:
    """Every partition of ``topics`` at its current end offset.

    A retriable refusal (a partition whose leader is moving, as right after
    the topic was created) is asked again until ``timeout_s`` has passed.
    """
    deadline = time.monotonic() + timeout_s
    positions = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise ValueError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition)
            for attempt in Retrying(
                retry=retry_if_exception(_retriable),
                stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=wait_fixed(0.1),
                reraise=True,
            ):
                with attempt:
                    high = consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            positions.append(TopicPartition(topic, partition, high))
    return positions


#: Refusals while a new topic's partitions get their leaders.
LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def _retriable(error: BaseException) -> bool:
    if not isinstance(error, KafkaException):
        return False
    kafka_error = error.args[0]
    return bool(kafka_error.retriable()) or kafka_error.code() in LEADER_MOVING


def take(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """The messages ready now, up to ``max_messages``, waiting up to ``timeout_s`` for the first.

    ``Consumer.consume(n, timeout)`` waits out the whole timeout unless ``n``
    messages come: at low load every result would wait for it. ``poll``
    returns with the first message; what else is ready follows at once.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


def join_group(consumer: Consumer, topics: Sequence[str], timeout_s: float) -> None:
    """Subscribe to ``topics`` and wait until the group gave partitions (or ``timeout_s``).

    A new group starts at the end of each partition (unless the consumer
    reads from the beginning), so join before producing what it should read.
    Messages read while joining are sought back to, to be read again.
    """
    consumer.subscribe(list(topics))
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment() and time.monotonic() < deadline:
        for message in consumer.consume(1, timeout=0.2):  # joins the group
            _rewind(consumer, message)


def _rewind(consumer: Consumer, message: Message) -> None:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if message.error() is None and topic and partition is not None and offset is not None:
        consumer.seek(TopicPartition(topic, partition, offset))
