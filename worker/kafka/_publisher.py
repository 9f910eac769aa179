"""Publishing results and dead letters; delivery outcomes queue up for the main loop.

Any thread may publish. Delivery callbacks run on whichever thread serves the
producer, so they only append to a thread-safe queue; the main loop drains it
with ``completed()`` and is the only place that acts on acknowledgements (and
counts them: ``Record.received_s`` is on the ``time.monotonic`` clock).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from torchkafka.codecs import DeadLetterInfo, dead_letter_headers
from torchkafka.worker._errors import DeliveryFailed
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.kafka._clients import kafka_error
from torchkafka.worker.ops import RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import Delivery, Outcome, Place, Record

#: What to do instead when the broker or the producer refuses a message as too large.
TooLarge = Callable[[KafkaError], None]
#: Results refused as too large that are remembered (the oldest are forgotten first).
REMEMBERED_REFUSALS = 1024


class KafkaPublisher:
    """Produces to the output and dead-letter topics; never drops on a full queue."""

    def __init__(
        self,
        producer: Producer,
        output_topic: str,
        dead_letter_topic: str,
        worker_id: str,
        metrics: WorkerMetrics,
        *,
        transactional: bool = False,
    ) -> None:
        self._producer = producer
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic
        self._worker_id = worker_id
        self._metrics = metrics
        self._completed: deque[Delivery] = deque()
        self._transactional = transactional
        #: Transactional: results the broker refused as too large, by input place.
        self._refused: OrderedDict[Place, str] = OrderedDict()

    def result(self, record: Record, request_id: str, value: bytes) -> None:
        """Publish ``record``'s result (key = the input's key).

        A result over a size limit (the producer's ``message.max.bytes``, or
        the output topic's ``max.message.bytes``) becomes the input's dead
        letter, ``result_too_large``. In a transaction, a refusal in a delivery
        report fails the transaction instead: the refusal is remembered, and
        when the record runs again its dead letter goes at once.
        """
        refused = self._refused.pop(record.place, None)

        def too_large(error: KafkaError | str) -> None:
            limit = error if isinstance(error, str) else error.str()
            detail = f"the result is {len(value)} bytes, over a size limit: {limit}"
            self.dead_letter(record, WorkerReason.RESULT_TOO_LARGE, detail, request_id)

        if refused is not None:
            too_large(refused)
            return

        self._produce(
            self._output_topic,
            record,
            request_id,
            Outcome.RESULT,
            value,
            None,
            too_large,
            record.key,
        )

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        """Publish ``record`` unchanged to the dead-letter topic, with why and where.

        A dead letter over a size limit goes again without the input's value,
        then, if still over, without its key and headers as well; the error
        says what was left out.
        """
        self._metrics.dead_lettered(reason)

        def send(
            key: bytes | None,
            value: bytes | None,
            original: list[tuple[str, str | bytes | None]],
            detail: str,
            on_too_large: TooLarge | None,
        ) -> None:
            info = DeadLetterInfo(
                reason=reason,
                error=detail,
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
                attempts=attempts,
                worker=self._worker_id,
                time_ms=int(time.time() * 1000),
            )
            headers = dead_letter_headers(original, info)
            self._produce(
                self._dead_letter_topic,
                record,
                request_id,
                Outcome.DEAD_LETTER,
                value,
                headers,
                on_too_large,
                key,
            )

        value = f"the value, {len(record.value)} bytes"

        def bare(limit: KafkaError) -> None:
            key = f"the key, {len(record.key or b'')} bytes"
            headers = f"the headers, {_header_bytes(record.headers)} bytes"
            detail = f"{error} ({value}, {key}, and {headers}, are left out: {limit.str()})"
            send(None, None, [], detail, None)

        def without_value(limit: KafkaError) -> None:
            detail = f"{error} ({value}, is left out: {limit.str()})"
            send(record.key, None, record.headers, detail, bare)

        send(record.key, record.value, record.headers, error, without_value)

    def completed(self, timeout_s: float = 0.0) -> list[Delivery]:
        """Serve delivery callbacks for up to ``timeout_s``; return every finished delivery."""
        self._producer.poll(timeout_s)
        done = []
        while self._completed:
            done.append(self._completed.popleft())
        now = time.monotonic()
        for outcome in Outcome:
            latencies = [
                now - d.record.received_s for d in done if d.outcome is outcome and d.error is None
            ]
            if latencies:
                self._metrics.delivered(outcome.value, latencies)
        return done

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self._producer.flush(timeout_s))

    def _remember_refusal(self, record: Record, error: KafkaError) -> None:
        self._refused[record.place] = f"{error.str()} (refused by the broker)"
        if len(self._refused) > REMEMBERED_REFUSALS:
            self._refused.popitem(last=False)

    def _produce(
        self,
        topic: str,
        record: Record,
        request_id: str | None,
        outcome: Outcome,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None,
        too_large: TooLarge | None,
        key: bytes | None,
    ) -> None:
        """Produce, waiting out a full queue; ``too_large`` handles a size refusal.

        librdkafka refuses an oversized message at once (the producer's limit)
        or in its delivery report (the topic's); either way ``too_large`` runs
        instead of a failed delivery, on the calling or the polling thread.
        """
        completed = self._completed
        published_s = time.monotonic()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is not None and too_large is not None and _too_large(error):
                if not self._transactional:
                    too_large(error)
                    return
                if outcome is Outcome.RESULT:  # no replacement joins a failed transaction
                    self._remember_refusal(record, error)
            failed = None if error is None else _delivery_failed(topic, error)
            completed.append(Delivery(record, outcome, failed, request_id, published_s))

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                # The local queue is full: serve deliveries to make room, then retry.
                self._metrics.retry(RetryKind.PRODUCE_QUEUE_FULL)
                self._producer.poll(0.05)
            except KafkaException as exc:
                error = kafka_error(exc)
                if not (error is not None and too_large and _too_large(error)):
                    raise
                too_large(error)
                return


def _header_bytes(headers: list[tuple[str, str | bytes | None]]) -> int:
    return sum(len(name.encode()) + len(value or b"") for name, value in headers)


def _too_large(error: KafkaError) -> bool:
    return error.code() == KafkaError.MSG_SIZE_TOO_LARGE


def _delivery_failed(topic: str, error: KafkaError) -> DeliveryFailed:
    return DeliveryFailed(f"delivery to {topic} failed: {error.str()}", code=error.name())
