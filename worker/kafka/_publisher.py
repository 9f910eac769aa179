"""Publishing results and dead letters; delivery outcomes queue up for the main loop.

Any thread may publish. Delivery callbacks run on whichever thread serves the
producer, so they only append to a thread-safe queue; the main loop drains it
with ``completed()`` and is the only place that acts on acknowledgements (and
counts them: ``Record.received_s`` is on the ``time.monotonic`` clock).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from torchkafka.codecs import DeadLetterInfo, dead_letter_headers
from torchkafka.worker._errors import DeliveryFailed
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.kafka._clients import kafka_error
from torchkafka.worker.ops import RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import Delivery, Outcome, Place, Record, ResultMessage

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

    def results(self, results: Sequence[ResultMessage]) -> None:
        """Publish each result (key = its input's key), a batch in one ``produce_batch`` call.

        A result over a size limit (the producer's ``message.max.bytes``, or
        the output topic's ``max.message.bytes``) becomes the input's dead
        letter, ``result_too_large``. In a transaction, a refusal in a delivery
        report fails the transaction instead: the refusal is remembered, and
        when the record runs again its dead letter goes at once. Results the
        full local queue refuses are sent again once deliveries made room.
        """
        published_s = time.monotonic()
        pending: list[ResultMessage] = []
        for result in results:
            refused = self._refused.pop(result.record.place, None) if self._refused else None
            if refused is None:
                pending.append(result)
            else:
                self._result_too_large(result, refused)
        while pending:
            messages = [
                {
                    "key": result.record.key,
                    "value": result.value,
                    "callback": partial(self._result_delivered, result, published_s),
                }
                for result in pending
            ]
            self._producer.produce_batch(self._output_topic, messages)
            pending = self._refused_by_the_queue(pending, messages)

    def _refused_by_the_queue(
        self, results: list[ResultMessage], messages: list[dict[str, Any]]
    ) -> list[ResultMessage]:
        """The results a full local queue refused (after serving deliveries to make room).

        A result refused as too large becomes its dead letter; another refusal raises.
        """
        full = []
        for result, message in zip(results, messages, strict=True):
            error: KafkaError | None = message.get("_error")
            if error is None:
                continue
            if error.code() == KafkaError._QUEUE_FULL:
                full.append(result)
            elif _too_large(error):
                self._result_too_large(result, error)
            else:
                raise KafkaException(error)
        if full:
            self._metrics.retry(RetryKind.PRODUCE_QUEUE_FULL, len(full))
            self._producer.poll(0.05)
        return full

    def _result_delivered(
        self, result: ResultMessage, published_s: float, error: KafkaError | None, _: Message
    ) -> None:
        if error is not None and _too_large(error):
            if not self._transactional:
                self._result_too_large(result, error)
                return
            self._remember_refusal(result.record, error)  # no replacement joins a failed one
        failed = None if error is None else _delivery_failed(self._output_topic, error)
        delivery = Delivery(result.record, Outcome.RESULT, failed, result.request_id, published_s)
        self._completed.append(delivery)

    def _result_too_large(self, result: ResultMessage, error: KafkaError | str) -> None:
        limit = error if isinstance(error, str) else error.str()
        detail = f"the result is {len(result.value)} bytes, over a size limit: {limit}"
        self.dead_letter(result.record, WorkerReason.RESULT_TOO_LARGE, detail, result.request_id)

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        """Publish ``record`` unchanged to the dead-letter topic (or ``topic``: a retry
        tier's), with why and where.

        A dead letter over a size limit goes again without the input's value,
        then, if still over, without its key and headers as well; the error
        says what was left out.
        """
        to = topic or self._dead_letter_topic
        if topic is None:
            self._metrics.dead_lettered(reason)
        else:
            self._metrics.retry(RetryKind.RETRY_TIER)

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
            self._produce(to, record, request_id, value, headers, on_too_large, key)

        value = f"the value, {len(record.value or b'')} bytes"

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
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        too_large: TooLarge | None,
        key: bytes | None,
    ) -> None:
        """Produce a dead letter to ``topic``, waiting out a full queue; ``too_large`` handles a
        size refusal.

        librdkafka refuses an oversized message at once (the producer's limit)
        or in its delivery report (the topic's); either way ``too_large`` runs
        instead of a failed delivery, on the calling or the polling thread (in
        a transaction, a refusal in a report is a failed delivery: it fails
        the transaction).
        """
        completed = self._completed
        published_s = time.monotonic()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is not None and too_large is not None and _too_large(error):  # noqa: SIM102
                if not self._transactional:  # in a transaction: a failed delivery
                    too_large(error)
                    return
            failed = None if error is None else _delivery_failed(topic, error)
            completed.append(Delivery(record, Outcome.DEAD_LETTER, failed, request_id, published_s))

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
