"""The consumer side of the Kafka edge: messages in as records, partitions paused on assign."""

from __future__ import annotations

import operator
from collections.abc import Iterable

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from torchkafka.worker.pipeline import Record, TopicPartitionKey

log = structlog.get_logger(__name__)


#: ``message.headers()`` through a call path on which CPython always checks the
#: result. For a header key that is not UTF-8, confluent-kafka returns headers
#: with a UnicodeDecodeError left set; a specialized (warm) method call does
#: not notice, and a later, unrelated call fails with SystemError. Called this
#: way it raises SystemError here, and the error is cleared.
_read_headers = operator.methodcaller("headers")


def record_from_message(message: Message, received_s: float) -> Record:
    """Copy what the pipeline needs out of a confluent-kafka message.

    Headers that cannot be read (confluent-kafka raises on a key that is not
    UTF-8) are left out and said why: the pipeline dead-letters such a record.
    """
    unreadable = None
    try:
        headers = _read_headers(message)
    except Exception as exc:  # any failure here is this record's, not the worker's
        headers, unreadable = None, f"{type(exc).__name__}: {exc}"
    topic = message.topic()
    partition = message.partition()
    offset = message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message must have a topic, partition and offset")
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=message.value() or b"",
        headers=list(headers.items()) if isinstance(headers, dict) else list(headers or []),
        received_s=received_s,
        unreadable_headers=unreadable,
    )


def is_record(message: Message) -> bool:
    """True for a record; False for a skippable event; raises on a fatal consumer error."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal() or not error.retriable():
        raise KafkaException(error)
    log.warning("consume error; continuing", error=error.str())
    return False


def assign_paused(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Add ``partitions`` to the assignment now, paused; call it from ``on_assign``.

    A pause of partitions not yet assigned is lost: confluent-kafka assigns them
    after ``on_assign`` returns, and librdkafka then fetches them unpaused. So
    assign first: incrementally under the cooperative protocol, whole under the
    eager one (where ``incremental_assign`` fails with ``_STATE``).
    """
    try:
        consumer.incremental_assign(partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._STATE:
            raise
        consumer.assign(partitions)
    consumer.pause(partitions)


def topic_partitions(keys: Iterable[TopicPartitionKey]) -> list[TopicPartition]:
    """confluent-kafka's ``TopicPartition`` for each (topic, partition)."""
    return [TopicPartition(topic, partition) for topic, partition in keys]
