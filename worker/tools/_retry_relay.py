"""``torchkafka retries``: the retry tiers' relay, back to the input topic when a record is due.

A worker with ``retry_delays_s`` sends a record whose model call failed to
the topic of its next tier (``INPUT.retry.N``). The relay reads every tier's
topic in one consumer group (``GROUP_ID.retries``), holds each record until
its tier's delay has passed since it was written (its timestamp), then
produces it to the input topic with its original key, value and headers and
``torchkafka.attempts`` (how many runs failed), and commits once the input
topic acknowledged it. A partition whose next record is not due yet is
paused (so memory holds at most one poll of it), and resumed once the
records it holds are sent. At least once: a relay stopped between a send and
its commit sends that record again; the worker's dedup answers it once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from torchkafka.client import produce_waiting
from torchkafka.codecs import ATTEMPTS_HEADER, HEADER_PREFIX
from torchkafka.worker._errors import WorkerError
from torchkafka.worker.config import WorkerConfig

log = structlog.get_logger(__name__)

Key = tuple[str, int]
#: Most records taken per poll.
POLL = 200


class RetryRelay:
    """Sends the records of the tiers' topics (``delays_s``: topic -> seconds) to ``target``."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        delays_s: Mapping[str, float],
        target: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._delays_s = dict(delays_s)
        self._target = target
        self._clock = clock
        self._held: dict[Key, deque[Message]] = {}
        self._paused: set[Key] = set()
        self._failure: KafkaError | None = None
        self.sent = 0

    def subscribe(self) -> None:
        """Join the relay's group on every tier's topic."""
        self._consumer.subscribe(
            list(self._delays_s), on_revoke=self._revoked, on_lost=self._revoked
        )

    def step(self, max_wait_s: float = 0.5) -> None:
        """Poll (up to the first record due, at most ``max_wait_s``), then send what is due."""
        for message in self._consumer.consume(POLL, timeout=self._wait(max_wait_s)):
            if message.error() is not None:
                log.warning("retry topic read error", error=str(message.error()))
                continue
            key = (message.topic() or "", message.partition() or 0)
            self._held.setdefault(key, deque()).append(message)
        self._send_due()
        self._pause_or_resume()

    def _wait(self, max_wait_s: float) -> float:
        heads = [self._due_s(queue[0]) for queue in self._held.values() if queue]
        if not heads:
            return max_wait_s
        return min(max_wait_s, max(0.0, min(heads) - self._clock()))

    def _due_s(self, message: Message) -> float:
        written_s = message.timestamp()[1] / 1000
        return written_s + self._delays_s[message.topic() or ""]

    def _send_due(self) -> None:
        now = self._clock()
        offsets: dict[Key, int] = {}
        count = 0
        for key, queue in self._held.items():
            while queue and self._due_s(queue[0]) <= now:
                message = queue.popleft()
                self._produce(message)
                offsets[key] = (message.offset() or 0) + 1
                count += 1
        if not offsets:
            return
        left = self._producer.flush(30)
        if left or self._failure is not None:
            raise WorkerError(
                f"the input topic did not take the retried records ({left} unacknowledged, "
                f"error: {self._failure}); their offsets are not committed, they go again"
            )
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
        self.sent += count
        log.info("retried records sent back", count=count, to=self._target)

    def _produce(self, message: Message) -> None:
        headers = resend_headers(message.headers() or [])

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._failure = error

        produce_waiting(
            self._producer,
            self._target,
            value=message.value(),
            key=message.key(),
            headers=headers,
            on_delivery=delivered,
        )

    def _pause_or_resume(self) -> None:
        waiting = {key for key, queue in self._held.items() if queue}
        to_pause, to_resume = waiting - self._paused, self._paused - waiting
        if to_pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in to_resume])
        self._paused = waiting

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget what is held of revoked partitions: their next owner reads it again."""
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
            self._paused.discard((tp.topic, tp.partition))


def resend_headers(headers: Any) -> list[tuple[str, str | bytes | None]]:
    """A retry record's own headers (``torchkafka.*`` removed) and its attempts header."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    kept = [(k, v) for k, v in items if not k.startswith(HEADER_PREFIX)]
    attempts = [(k, v) for k, v in items if k == ATTEMPTS_HEADER]
    return kept + attempts[-1:]


def run_retries(config: WorkerConfig, stop: threading.Event) -> int:
    """Relay the tiers of ``config`` until ``stop``; the exit code (1: a send failed)."""
    connection = config.kafka.librdkafka()
    consumer = Consumer(
        {
            **connection,
            **config.kafka.consumer,
            "group.id": f"{config.group_id}.retries",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {**connection, **config.kafka.producer, "enable.idempotence": True, "acks": "all"}
    )
    relay = RetryRelay(consumer, producer, dict(config.retry_topics), config.input_topic)
    relay.subscribe()
    log.info("relaying retry tiers", tiers=dict(config.retry_topics), to=config.input_topic)
    try:
        while not stop.is_set():
            relay.step()
    except WorkerError as exc:
        log.error("retry relay stopped", error=str(exc))
        return 1
    finally:
        consumer.close()
        producer.flush(10)
    log.info("retry relay stopped", sent=relay.sent)
    return 0
