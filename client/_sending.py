"""Producing requests: encoded, keyed by id, a full local queue waited out, deliveries counted.

``RequestSender`` is the one way requests reach the input topic: the
``Client`` sends through it and so does ``torchkafka produce``.
``produce_waiting`` is its queueing step, for any record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from torchkafka.codecs import Encoder, Request

#: Called once per request with the broker's error, or None when it was written.
Delivered = Callable[[KafkaError | None], None]


def produce_waiting(producer: Producer, topic: str, **message: Any) -> None:
    """Queue one message to ``topic``; while the local queue is full, serve deliveries and
    retry (a full queue is waited out, never dropped). A refusal at once raises."""
    while True:
        try:
            producer.produce(topic, **message)
            return
        except BufferError:
            producer.poll(0.05)


@dataclass(slots=True)
class SendStats:
    """What a ``RequestSender`` sent and what the broker said about it."""

    sent: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the report

    def summary(self, elapsed_s: float) -> str:
        """One line: messages, MB and messages/s over ``elapsed_s``."""
        rate = self.sent / elapsed_s if elapsed_s > 0 else 0.0
        line = (
            f"sent {self.sent} messages, {self.bytes / 1e6:.1f} MB in {elapsed_s:.1f} s "
            f"({rate:.0f} msg/s), {self.failed} delivery errors"
        )
        return line + (f" (first: {self.errors[0]})" if self.errors else "")


class RequestSender:
    """Produces requests to one topic, keyed by their id unless told otherwise.

    ``send`` waits out a full local queue; ``try_send`` says False instead
    (an asyncio caller waits without blocking its loop). A refusal at once
    (a request over ``message.max.bytes``, an unknown topic) raises
    ``KafkaException``. Deliveries are counted in ``stats`` once the
    producer is polled (``poll``, ``flush``). Not thread-safe: its encoder
    is reused.
    """

    MAX_ERRORS_KEPT = 5

    def __init__(self, producer: Producer, topic: str) -> None:
        self.stats = SendStats()
        self._producer = producer
        self._topic = topic
        self._encoder = Encoder()

    def send(
        self, request: Request, *, key: bytes | None = None, on_delivery: Delivered | None = None
    ) -> None:
        """Queue ``request``; while the local queue is full, serve deliveries and retry."""
        self.send_encoded(key or request.id.encode(), self._encoder.request(request), on_delivery)

    def send_encoded(
        self, key: bytes | None, value: bytes, on_delivery: Delivered | None = None
    ) -> None:
        """``send`` for a value encoded already (or, to test a worker, any bytes)."""
        produce_waiting(
            self._producer,
            self._topic,
            key=key,
            value=value,
            on_delivery=self._delivery_callback(on_delivery),
        )
        self._count(value)

    def try_send(
        self, request: Request, *, key: bytes | None = None, on_delivery: Delivered | None = None
    ) -> bool:
        """Queue ``request``; False, with nothing queued, while the local queue is full."""
        value = self._encoder.request(request)
        try:
            self._producer.produce(
                self._topic,
                key=key or request.id.encode(),
                value=value,
                on_delivery=self._delivery_callback(on_delivery),
            )
        except BufferError:
            self._producer.poll(0)
            return False
        self._count(value)
        return True

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks for up to ``timeout_s`` (a sleep that does work).

        librdkafka counts whole milliseconds, so the wait is rounded up: a
        shorter one would return at once and make a pacing loop spin.
        """
        self._producer.poll(math.ceil(timeout_s * 1000) / 1000)

    def flush(self, timeout_s: float = 30.0) -> SendStats:
        """Wait for every delivery; what is still unacknowledged after ``timeout_s`` failed."""
        undelivered = int(self._producer.flush(timeout_s))
        if undelivered:
            self._failed(undelivered, f"not acknowledged within {timeout_s:.0f} s")
        return self.stats

    def _count(self, value: bytes) -> None:
        self.stats.sent += 1
        self.stats.bytes += len(value)
        self._producer.poll(0)

    def _delivery_callback(
        self, on_delivery: Delivered | None
    ) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.stats.delivered += 1
            else:
                self._failed(1, str(error))
            if on_delivery is not None:
                on_delivery(error)

        return delivered

    def _failed(self, count: int, error: str) -> None:
        self.stats.failed += count
        if len(self.stats.errors) < self.MAX_ERRORS_KEPT:
            self.stats.errors.append(error)
