"""``ResultStream``: every result (and dead letter) as it arrives, for who reads them all."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer

from torchkafka.client._consumers import end_positions, join_group, result_consumer, take
from torchkafka.client._errors import UnreadableOutcome
from torchkafka.client._outcomes import Outcome, read_outcome
from torchkafka.worker.config import KafkaConnection

log = structlog.get_logger(__name__)

#: Most messages taken per poll.
POLL = 500


class ResultStream:
    """Outcomes read from a positioned consumer: an iterator and an async iterator.

    Each item is a ``Result`` or, for a message of ``dead_letter_topic``, a
    ``DeadLettered`` (yielded, not raised). Iteration ends when the stream is
    closed. A message that is not an outcome is counted in ``unreadable`` and
    given to ``on_unreadable`` (default: a logged warning); a consumer error
    goes there too. Thread-safe; ``async for`` polls on a worker thread, so
    the event loop never blocks on Kafka.
    """

    def __init__(
        self,
        consumer: Consumer,
        dead_letter_topic: str | None = None,
        *,
        on_unreadable: Callable[[str], None] | None = None,
    ) -> None:
        self.unreadable = 0
        self._consumer = consumer
        self._dead_letter_topic = dead_letter_topic
        self._on_unreadable = on_unreadable or _log_unreadable
        self._lock = threading.Lock()
        self._buffer: deque[Outcome] = deque()
        self._closed = False

    def poll(self, timeout_s: float = 0.2, max_messages: int = POLL) -> list[Outcome]:
        """The outcomes read within ``timeout_s`` (at most ``max_messages`` messages)."""
        with self._lock:
            if self._closed:
                return []
            messages = take(self._consumer, max_messages, timeout_s)
        outcomes: list[Outcome] = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_unreadable(f"consumer error: {error}")
                continue
            try:
                outcomes.append(read_outcome(message, self._dead_letter_topic))
            except UnreadableOutcome as exc:
                self.unreadable += 1
                self._on_unreadable(str(exc))
        return outcomes

    def close(self) -> None:
        """Stop reading and close the consumer (waits for a poll in progress)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._consumer.close()

    async def aclose(self) -> None:
        """``close`` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __iter__(self) -> ResultStream:
        return self

    def __next__(self) -> Outcome:
        while not self._buffer:
            if self._closed:
                raise StopIteration
            self._buffer.extend(self.poll())
        return self._buffer.popleft()

    def __aiter__(self) -> ResultStream:
        return self

    async def __anext__(self) -> Outcome:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._buffer.extend(await asyncio.to_thread(self.poll))
        return self._buffer.popleft()

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ResultStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def open_results(
    connection: KafkaConnection | Mapping[str, str],
    output_topic: str,
    dead_letter_topic: str | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    timeout_s: float = 30.0,
    on_unreadable: Callable[[str], None] | None = None,
) -> ResultStream:
    """A ``ResultStream`` of ``output_topic`` (and ``dead_letter_topic``), ready to read.

    Without ``group_id`` it is assigned every partition at its current end
    (or start, ``from_beginning``): it sees everything published from then
    on, next to any other reader. With ``group_id`` it joins that consumer
    group (waiting up to ``timeout_s`` for its partitions) and shares the
    partitions with the group's other members; a new group starts at the
    end, or the start with ``from_beginning``; offsets are never committed.
    """
    settings = connection_settings(connection)
    topics = [output_topic] if dead_letter_topic is None else [output_topic, dead_letter_topic]
    consumer = result_consumer(settings, group_id, from_beginning=from_beginning)
    try:
        if group_id is not None:
            join_group(consumer, topics, timeout_s)
        else:
            positions = end_positions(consumer, topics, timeout_s)
            if from_beginning:
                for position in positions:
                    position.offset = OFFSET_BEGINNING
            consumer.assign(positions)
    except BaseException:
        consumer.close()
        raise
    return ResultStream(consumer, dead_letter_topic, on_unreadable=on_unreadable)


def connection_settings(connection: KafkaConnection | Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from the worker's ``KafkaConnection`` or given as they are."""
    if isinstance(connection, KafkaConnection):
        return connection.librdkafka()
    return dict(connection)


def _log_unreadable(text: str) -> None:
    log.warning("skipped a message that is not an outcome", error=text)
