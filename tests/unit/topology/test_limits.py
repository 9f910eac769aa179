"""The worker's size limits hold one another: a request at the limit fits its record, which
fits one fetch and its dead letter, which fits the dead-letter topic and the producer."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from torchkafka.codecs import MAX_MESSAGE_BYTES, DeadLetterInfo, Reason, dead_letter_headers
from torchkafka.topology import SizeLimits, TopicSpec, worker_topics
from torchkafka.topology._limits import BATCH_FRAMING, DEAD_LETTER_ROOM

LIMITS = SizeLimits()
#: Kafka's longest topic name, and a long host/pid.
TOPIC = "t" * 249
WORKER = "h" * 253 + "/4194304"


def test_each_limit_holds_the_one_before_it() -> None:
    assert LIMITS.max_message_bytes == MAX_MESSAGE_BYTES
    assert LIMITS.max_message_bytes < LIMITS.input_record_bytes
    assert LIMITS.input_record_bytes < LIMITS.producer_message_bytes < LIMITS.output_record_bytes
    consumer = {key: int(value) for key, value in LIMITS.consumer().items()}
    assert consumer["max.partition.fetch.bytes"] == LIMITS.input_record_bytes
    assert consumer["fetch.max.bytes"] >= consumer["max.partition.fetch.bytes"]
    # librdkafka's own rule: a response is the fetch plus 512 bytes of framing.
    assert consumer["receive.message.max.bytes"] >= consumer["fetch.max.bytes"] + 512
    assert LIMITS.producer() == {"message.max.bytes": str(LIMITS.producer_message_bytes)}


def test_the_torchkafka_headers_of_the_longest_dead_letter_fit_its_room() -> None:
    info = DeadLetterInfo(
        reason=max((reason.value for reason in Reason), key=len) + "_and_more",
        error="$.inputs['" + "x" * 100_000 + "']: cut to MAX_ERROR_BYTES",
        source_topic=TOPIC,
        source_partition=2**31 - 1,
        source_offset=2**63 - 1,
        attempts=1000,
        worker=WORKER,
        time_ms=2**53,
    )
    # Each header costs its key and value plus two length varints (at most 5 bytes each).
    size = sum(len(key) + len(value or b"") + 10 for key, value in dead_letter_headers([], info))
    assert size < DEAD_LETTER_ROOM


def test_librdkafka_takes_the_client_settings() -> None:
    base = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}
    Consumer({**base, "group.id": "limits", **LIMITS.consumer()}).close()
    Producer({**base, **LIMITS.producer()}).flush(0)


def test_worker_topics_carry_the_limits() -> None:
    limits = SizeLimits(max_message_bytes=1 << 20)
    assert worker_topics("in", "out", "dlq", 8, 3, limits) == [
        TopicSpec("in", 8, 3, {"max.message.bytes": str(limits.input_record_bytes)}),
        TopicSpec("out", 8, 3, {"max.message.bytes": str(limits.output_record_bytes)}),
        TopicSpec("dlq", 1, 3, {"max.message.bytes": str(limits.output_record_bytes)}),
    ]


def test_the_producer_batches_stay_under_the_topics_it_writes_to() -> None:
    # Topics made by `topics create`: librdkafka's own batch size (1 MB) is smaller.
    assert LIMITS.producer(LIMITS.output_record_bytes) == LIMITS.producer()
    # A smaller topic: a batch of several messages, framing included, fits it.
    assert LIMITS.producer(50_000) == {
        "message.max.bytes": str(LIMITS.producer_message_bytes),
        "batch.size": str(50_000 - BATCH_FRAMING),
    }
    Producer({"bootstrap.servers": "127.0.0.1:1", **LIMITS.producer(1500)}).flush(0)
