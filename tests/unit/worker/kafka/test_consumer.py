"""RecordReader: a batch librdkafka cannot read becomes one record per offset, sought past."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.support.fake_kafka import FakeConsumer, FakeMessage
from torchkafka.worker.kafka._consumer import RecordReader

UNREADABLE = KafkaError(KafkaError._BAD_COMPRESSION, "Decompression failed")
PARTITION = TopicPartition("in", 0)


def report(offset: int, error: KafkaError = UNREADABLE) -> Any:  # a Message, to the reader
    return FakeMessage("in", 0, offset, None, _error=error)


def position(consumer: FakeConsumer) -> int:
    return consumer.position([PARTITION])[0].offset


def test_repeated_reports_of_one_batch_are_one_record_per_offset_and_a_seek_each() -> None:
    consumer = FakeConsumer()
    reader = RecordReader(consumer)  # type: ignore[arg-type]
    first = reader.records([report(0), report(0)], 1.0)  # twice: both fetched before the seek
    assert [(r.offset, r.value, r.unreadable) for r in first] == [(0, None, "Decompression failed")]
    assert position(consumer) == 1
    good: Any = FakeMessage("in", 0, 4, b"v")
    again = reader.records([report(0), good], 2.0)  # fetched from 1: the batch goes on
    assert [(r.offset, r.value) for r in again] == [(1, None), (4, b"v")]
    assert position(consumer) == 2


def test_other_consumer_errors_still_stop_the_worker() -> None:
    reader = RecordReader(FakeConsumer())  # type: ignore[arg-type]
    with pytest.raises(KafkaException):
        reader.records([report(5, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))], 1.0)


def test_a_tombstone_and_a_header_without_value_stay_null() -> None:
    reader = RecordReader(FakeConsumer())  # type: ignore[arg-type]
    tombstone: Any = FakeMessage("in", 0, 3, None, b"k", [("trace", None), ("empty", b"")])
    (record,) = reader.records([tombstone], 1.0)
    assert (record.key, record.value, record.headers) == (
        b"k",
        None,
        [("trace", None), ("empty", b"")],
    )
