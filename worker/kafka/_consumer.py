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
        value=message.value(),
        headers=list(headers.items()) if isinstance(headers, dict) else list(headers or []),
        received_s=received_s,
        unreadable_headers=unreadable,
    )


#: Errors librdkafka reports in place of the records of a batch it cannot read (one whose
#: data does not decompress: corrupt, or zstd inflating past receive.message.max.bytes).
#: It reports one at the batch's first offset, and again at every fetch from inside it.
_UNREADABLE = frozenset({KafkaError._BAD_COMPRESSION, KafkaError._BAD_MSG})


class RecordReader:
    """Records out of consumed messages; an unreadable one becomes a record without a value.

    librdkafka does not move past a batch it cannot read: each fetch from
    inside it reports the error again, at the batch's first offset. So each
    report stands for the first offset not read yet (the larger of that offset
    and the consumer's position), and the consumer seeks past it. A batch of n
    records takes n reports, each its own dead letter; repeats of one report
    within a poll (fetched before the seek) are dropped.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def records(self, messages: Iterable[Message], received_s: float) -> list[Record]:
        """The records among ``messages``; raises on a fatal consumer error."""
        records = []
        reported: set[tuple[str | None, int | None, int | None]] = set()
        for message in messages:
            error = message.error()
            if error is None:
                records.append(record_from_message(message, received_s))
                continue
            if not is_record(message):
                continue
            report = (message.topic(), message.partition(), message.offset())
            if report not in reported:
                reported.add(report)
                records.append(self._unreadable(message, error, received_s))
        return records

    def _unreadable(self, message: Message, error: KafkaError, received_s: float) -> Record:
        topic, partition, reported = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or reported is None:
            raise KafkaException(error)
        (position,) = self._consumer.position([TopicPartition(topic, partition)])
        offset = max(reported, position.offset)
        self._consumer.seek(TopicPartition(topic, partition, offset + 1))
        return Record(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None,
            value=None,
            headers=[],
            received_s=received_s,
            unreadable=error.str(),
        )


def is_record(message: Message) -> bool:
    """True for a record, readable or not; False for a skippable event; raises on a fatal
    consumer error."""
    error = message.error()
    offset = message.offset()
    if error is None or (error.code() in _UNREADABLE and offset is not None and offset >= 0):
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
