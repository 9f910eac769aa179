"""The retry relay: each record goes back to the input once its tier's delay has passed."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from torchkafka.codecs import ATTEMPTS_HEADER
from torchkafka.worker._errors import WorkerError
from torchkafka.worker.tools import RetryRelay
from torchkafka.worker.tools._retry_relay import resend_headers

TIER = "in.retry.1"
HEADERS: list[tuple[str, str | bytes | None]] = [
    ("trace", b"t"),
    ("torchkafka.reason", b"model_error"),
    (ATTEMPTS_HEADER, b"1"),
]


def written(partition: int, offset: int, at_s: float) -> Message:
    return Message(
        topic=TIER, partition=partition, offset=offset, key=f"k{offset}".encode(),
        value=f"v{offset}".encode(), headers=HEADERS, timestamp=(1, int(at_s * 1000)),
    )  # fmt: skip


class FakeConsumer:
    def __init__(self, polls: list[list[Message]]) -> None:
        self.polls = polls
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []
        self.commits: list[list[tuple[str, int, int]]] = []

    def consume(self, _count: int, timeout: float) -> list[Message]:
        return self.polls.pop(0) if self.polls else []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))


class FakeProducer:
    def __init__(self, error: KafkaError | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self._pending: list[Any] = []
        self._error = error

    def produce(self, topic: str, **message: Any) -> None:
        self.sent.append({"topic": topic, **message})
        self._pending.append(message["on_delivery"])

    def flush(self, _timeout: float) -> int:
        for report in self._pending:
            report(self._error, None)
        self._pending = []
        return 0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def relay(consumer: FakeConsumer, producer: FakeProducer, clock: Clock) -> RetryRelay:
    return RetryRelay(consumer, producer, {TIER: 10.0}, "in", clock)  # type: ignore[arg-type]


def test_due_records_go_now_and_the_rest_wait_with_their_partition_paused() -> None:
    consumer = FakeConsumer([[written(0, 4, 95.0), written(0, 5, 96.0), written(1, 9, 80.0)]])
    producer, clock = FakeProducer(), Clock(100.0)
    retries = relay(consumer, producer, clock)
    retries.step()
    assert [m["value"] for m in producer.sent] == [b"v9"]
    assert consumer.commits == [[(TIER, 1, 10)]]
    assert consumer.paused == [(TIER, 0)]
    clock.now = 105.5
    retries.step()
    assert [m["value"] for m in producer.sent] == [b"v9", b"v4"]
    assert consumer.commits[-1] == [(TIER, 0, 5)]
    assert consumer.resumed == []
    clock.now = 106.0
    retries.step()
    assert [m["value"] for m in producer.sent] == [b"v9", b"v4", b"v5"]
    assert consumer.commits[-1] == [(TIER, 0, 6)]
    assert consumer.resumed == [(TIER, 0)]
    assert retries.sent == 3
    assert all(m["topic"] == "in" for m in producer.sent)
    assert producer.sent[0]["key"] == b"k9"
    assert producer.sent[0]["headers"] == [("trace", b"t"), (ATTEMPTS_HEADER, b"1")]


def test_a_failed_send_stops_the_relay_without_committing() -> None:
    consumer = FakeConsumer([[written(0, 4, 10.0)]])
    producer = FakeProducer(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    with pytest.raises(WorkerError, match="did not take the retried records"):
        relay(consumer, producer, Clock(100.0)).step()
    assert consumer.commits == []


def test_a_revoked_partition_forgets_what_it_held() -> None:
    consumer = FakeConsumer([[written(0, 4, 95.0)]])
    producer, clock = FakeProducer(), Clock(100.0)
    retries = relay(consumer, producer, clock)
    retries.step()
    retries._revoked(consumer, [TopicPartition(TIER, 0)])  # type: ignore[arg-type]
    clock.now = 200.0
    retries.step()
    assert producer.sent == []


def test_resent_headers_keep_the_records_own_and_the_attempts() -> None:
    assert resend_headers(HEADERS) == [("trace", b"t"), (ATTEMPTS_HEADER, b"1")]
    assert resend_headers([("a", None)]) == [("a", None)]
