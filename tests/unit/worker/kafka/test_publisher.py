"""KafkaPublisher: an oversized result becomes a dead letter; a dead letter may lose its value."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from torchkafka.codecs import read_dead_letter_info
from torchkafka.worker.kafka import KafkaPublisher
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import Outcome, Record, ResultMessage

Callback = Callable[[KafkaError | None, object], None]


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] | None


@dataclass
class SizeLimitedProducer:
    """Refuses messages over ``client_limit`` at once, and over ``topic_limit`` on delivery.

    A message's size is its value's, key's and headers' bytes.
    """

    client_limit: int = 1000
    topic_limit: int = 1000
    #: Reports waiting for a poll that fill the local queue (more are refused: _QUEUE_FULL).
    queue_limit: int = 1_000_000
    #: What ``produce_batch`` refuses every message with, if anything.
    refuse_with: int | None = None
    sent: list[Sent] = field(default_factory=list)
    _reports: list[tuple[Callback, KafkaError | None]] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callback | None = None,
    ) -> None:
        size = len(value or b"") + len(key or b"")
        size += sum(len(name) + len(content or b"") for name, content in headers or [])
        if size > self.client_limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        assert on_delivery is not None
        too_large = size > self.topic_limit
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if too_large else None
        if error is None:
            self.sent.append(Sent(topic, key, value, headers))
        self._reports.append((on_delivery, error))

    def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
        """As librdkafka: each refused message gets an ``_error``; no report for it."""
        queued = 0
        for message in messages:
            if self.refuse_with is not None or len(self._reports) >= self.queue_limit:
                message["_error"] = KafkaError(self.refuse_with or KafkaError._QUEUE_FULL)
                continue
            try:
                self.produce(topic, message["value"], message["key"], None, message["callback"])
            except KafkaException as exc:
                message["_error"] = exc.args[0]
            else:
                queued += 1
        return queued

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, None)
        return len(reports)


def publisher(producer: SizeLimitedProducer) -> KafkaPublisher:
    return KafkaPublisher(producer, "out", "dlq", "w1", WorkerMetrics())  # type: ignore[arg-type]


def record(value: bytes | None, key: bytes = b"k", trace: bytes | None = b"t1") -> Record:
    return Record("in", 0, 7, key, value, [("trace", trace)], time.monotonic())


def settled(producer: SizeLimitedProducer, out: KafkaPublisher) -> list[Outcome]:
    deliveries = out.completed()
    deliveries += out.completed()  # a dead letter produced from a callback reports next poll
    assert all(d.error is None for d in deliveries)
    return [d.outcome for d in deliveries]


def test_a_result_over_the_producers_limit_dead_letters_its_input() -> None:
    producer = SizeLimitedProducer(client_limit=1000)
    out = publisher(producer)
    out.results([ResultMessage(record(b"request"), "r1", b"x" * 2000)])
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    (letter,) = producer.sent
    assert (letter.topic, letter.value) == ("dlq", b"request")
    assert letter.headers is not None
    info = read_dead_letter_info(letter.headers)
    assert info.reason == "result_too_large"
    assert "the result is 2000 bytes" in info.error


def test_a_result_the_topic_refuses_as_too_large_dead_letters_its_input() -> None:
    producer = SizeLimitedProducer(client_limit=10_000, topic_limit=1000)
    out = publisher(producer)
    out.results([ResultMessage(record(b"request"), "r1", b"x" * 2000)])
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    assert [(s.topic, s.value) for s in producer.sent] == [("dlq", b"request")]


def test_results_a_full_queue_refuses_go_again_once_deliveries_made_room() -> None:
    producer = SizeLimitedProducer(queue_limit=2)
    metrics = WorkerMetrics()
    out = KafkaPublisher(producer, "out", "dlq", "w1", metrics)  # type: ignore[arg-type]
    out.results([ResultMessage(record(b"request"), f"r{i}", b"result") for i in range(5)])
    assert [d.request_id for d in out.completed()] == [f"r{i}" for i in range(5)]
    assert [s.topic for s in producer.sent] == ["out"] * 5
    retries = metrics.registry.get_sample_value(
        "torchkafka_retries_total", {"kind": "produce_queue_full"}
    )
    assert retries == 3 + 1  # r2-r4 refused, then r4 again


def test_results_refused_otherwise_raise() -> None:
    producer = SizeLimitedProducer(refuse_with=KafkaError._UNKNOWN_TOPIC)
    out = publisher(producer)
    with pytest.raises(KafkaException, match="UNKNOWN_TOPIC"):
        out.results([ResultMessage(record(b"request"), "r1", b"result")])
    assert out.completed() == []


def test_a_tombstone_and_a_header_without_value_are_dead_lettered_as_they_came() -> None:
    producer = SizeLimitedProducer()
    out = publisher(producer)
    out.dead_letter(record(None, trace=None), "malformed_msgpack", "$: no value", None)
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    (letter,) = producer.sent
    assert (letter.key, letter.value) == (b"k", None)
    assert letter.headers is not None
    assert letter.headers[0] == ("trace", None)


def test_an_input_too_large_for_the_dead_letter_topic_goes_without_its_value() -> None:
    producer = SizeLimitedProducer(client_limit=1000)
    out = publisher(producer)
    out.dead_letter(record(b"v" * 5000), "message_too_large", "5000 bytes", "r1")
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    (letter,) = producer.sent
    assert letter.value is None
    assert letter.headers is not None
    assert ("trace", b"t1") in letter.headers
    info = read_dead_letter_info(letter.headers)
    assert info.reason == "message_too_large"
    assert "the value, 5000 bytes, is left out" in info.error


@pytest.mark.parametrize(
    ("key", "trace", "left_out"),
    [(b"k" * 5000, b"t1", "the key, 5000 bytes"), (b"k", b"t" * 5000, "the headers, 5005 bytes")],
    ids=["huge-key", "huge-headers"],
)
def test_a_dead_letter_too_large_without_its_value_goes_without_key_and_headers(
    key: bytes, trace: bytes, left_out: str
) -> None:
    producer = SizeLimitedProducer(client_limit=1000, topic_limit=1000)
    out = publisher(producer)
    out.dead_letter(record(b"v" * 10, key, trace), "malformed_msgpack", "truncated", "r1")
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    (letter,) = producer.sent
    assert (letter.key, letter.value) == (None, None)
    assert letter.headers is not None
    assert [name for name, _ in letter.headers if not name.startswith("torchkafka.")] == []
    info = read_dead_letter_info(letter.headers)
    assert (info.reason, info.source_offset) == ("malformed_msgpack", 7)
    assert info.error.startswith("truncated (the value, 10 bytes, the key, ")
    assert left_out in info.error
    assert "are left out: Broker: Message size too large)" in info.error


def test_a_result_with_a_huge_key_dead_letters_its_input_without_the_key() -> None:
    producer = SizeLimitedProducer(client_limit=1000)
    out = publisher(producer)
    out.results([ResultMessage(record(b"request", key=b"k" * 5000), "r1", b"result")])
    assert settled(producer, out) == [Outcome.DEAD_LETTER]
    (letter,) = producer.sent
    assert (letter.key, letter.value) == (None, None)
    assert letter.headers is not None
    assert read_dead_letter_info(letter.headers).reason == "result_too_large"
