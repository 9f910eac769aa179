"""The client's one background consumer: results and dead letters back to their futures.

It is assigned every partition of the result and dead-letter topics (no
consumer group, nothing committed), starting at their ends as they are when
the client starts: every client process sees every result published after
it started, and keeps those it awaits. A result settles its id's futures; a
dead letter (its id read from the request it carries) fails them with
``DeadLettered``; what no future awaits is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from torchkafka.client._errors import DeadLettered
from torchkafka.client._pending import Pending
from torchkafka.codecs import (
    DecodeError,
    Result,
    decode_result,
    read_dead_letter_info,
    request_id_of,
)

log = structlog.get_logger(__name__)

#: Most messages taken per poll.
POLL = 500


class ResultRouter:
    """Reads ``output_topic`` and ``dead_letter_topic`` on a daemon thread into ``pending``."""

    def __init__(
        self,
        consumer: Consumer,
        output_topic: str,
        dead_letter_topic: str,
        pending: Pending[Result],
    ) -> None:
        self._consumer = consumer
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic
        self._pending = pending
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchkafka-client", daemon=True)

    def start(self, timeout_s: float) -> None:
        """Assign both topics at their current ends, then read on the thread."""
        self._consumer.assign(
            end_positions(self._consumer, [self._output_topic, self._dead_letter_topic], timeout_s)
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(POLL, timeout=0.1):
                if message.error() is None:
                    self.route(message)
            self._pending.expire(time.monotonic())

    def route(self, message: Message) -> None:
        """Settle the futures of the id ``message`` answers (a result or a dead letter)."""
        value = message.value() or b""
        if message.topic() == self._output_topic:
            try:
                result = decode_result(value)
            except DecodeError as exc:
                log.warning("a result that does not decode, skipped", error=str(exc))
                return
            self._pending.resolve(result.id, result)
            return
        request_id = request_id_of(value)
        headers = message.headers() or []
        if request_id is None or not isinstance(headers, list):
            return
        try:
            info = read_dead_letter_info(headers)
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("a dead letter without its headers, skipped", id=request_id)
            return
        self._pending.reject(request_id, DeadLettered(request_id, info))


def end_positions(
    consumer: Consumer, topics: Sequence[str], timeout_s: float
) -> list[TopicPartition]:
    """Every partition of ``topics`` at its current end offset."""
    positions = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise ValueError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition)
            high = consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            positions.append(TopicPartition(topic, partition, high))
    return positions
