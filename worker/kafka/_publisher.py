"""Publishing results and dead letters; delivery outcomes queue up for the main loop.

Any thread may publish. Delivery callbacks run on whichever thread serves the
producer, so they only append to a thread-safe queue; the main loop drains it
with ``completed()`` and is the only place that acts on acknowledgements (and
counts them: ``Record.received_s`` is on the ``time.monotonic`` clock).
"""

from __future__ import annotations

import time
from collections import deque

from confluent_kafka import KafkaError, Message, Producer

from torchkafka.codecs import DeadLetterInfo, dead_letter_headers
from torchkafka.worker._errors import DeliveryFailed
from torchkafka.worker.ops import RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import Delivery, Outcome, Record


class KafkaPublisher:
    """Produces to the output and dead-letter topics; never drops on a full queue."""

    def __init__(
        self,
        producer: Producer,
        output_topic: str,
        dead_letter_topic: str,
        worker_id: str,
        metrics: WorkerMetrics,
    ) -> None:
        self._producer = producer
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic
        self._worker_id = worker_id
        self._metrics = metrics
        self._completed: deque[Delivery] = deque()

    def result(self, record: Record, request_id: str, value: bytes) -> None:
        """Publish ``record``'s result (key = the input's key)."""
        self._produce(self._output_topic, record, request_id, Outcome.RESULT, value, None)

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        """Publish ``record`` unchanged to the dead-letter topic, with why and where."""
        info = DeadLetterInfo(
            reason=reason,
            error=error,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            attempts=attempts,
            worker=self._worker_id,
            time_ms=int(time.time() * 1000),
        )
        headers = dead_letter_headers(record.headers, info)
        self._metrics.dead_lettered(reason)
        self._produce(
            self._dead_letter_topic, record, request_id, Outcome.DEAD_LETTER, record.value, headers
        )

    def completed(self, timeout_s: float = 0.0) -> list[Delivery]:
        """Serve delivery callbacks for up to ``timeout_s``; return every finished delivery."""
        self._producer.poll(timeout_s)
        done = []
        while self._completed:
            done.append(self._completed.popleft())
        now = time.monotonic()
        for delivery in done:
            if delivery.error is None:
                self._metrics.delivered(delivery.outcome.value, now - delivery.record.received_s)
        return done

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self._producer.flush(timeout_s))

    def _produce(
        self,
        topic: str,
        record: Record,
        request_id: str | None,
        outcome: Outcome,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None,
    ) -> None:
        completed = self._completed

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            failed = None if error is None else _delivery_failed(topic, error)
            completed.append(Delivery(record, outcome, failed, request_id))

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=record.key, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                # The local queue is full: serve deliveries to make room, then retry.
                self._metrics.retry(RetryKind.PRODUCE_QUEUE_FULL)
                self._producer.poll(0.05)


def _delivery_failed(topic: str, error: KafkaError) -> DeliveryFailed:
    return DeliveryFailed(f"delivery to {topic} failed: {error.str()}", code=error.name())
