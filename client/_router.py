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
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from torchkafka.client._consumers import end_positions, take
from torchkafka.client._errors import ClientClosed, DeadLettered, UnreadableOutcome
from torchkafka.client._outcomes import read_outcome
from torchkafka.client._pending import Pending
from torchkafka.codecs import Result

log = structlog.get_logger(__name__)

#: Most messages taken per poll.
POLL = 500


class ResultRouter:
    """Reads ``output_topic`` and ``dead_letter_topic`` on a daemon thread into ``pending``.

    Between polls it expires what waited too long and calls ``tick`` (the
    client serves its producer's delivery reports there).
    """

    def __init__(
        self,
        consumer: Consumer,
        output_topic: str,
        dead_letter_topic: str,
        pending: Pending[Result],
        tick: Callable[[], object] = lambda: None,
    ) -> None:
        self.positions: list[TopicPartition] = []
        self._consumer = consumer
        self._topics = [output_topic, dead_letter_topic]
        self._dead_letter_topic = dead_letter_topic
        self._pending = pending
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchkafka-client", daemon=True)

    def start(self, timeout_s: float) -> None:
        """Assign both topics at their current ends (kept in ``positions``), then read."""
        try:
            self.positions = end_positions(self._consumer, self._topics, timeout_s)
        except BaseException:
            self._consumer.close()
            raise
        self._consumer.assign(self.positions)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in take(self._consumer, POLL, 0.1):
                    if message.error() is None:
                        self.route(message)
                self._pending.expire(time.monotonic())
                self._tick()
        except Exception as exc:  # a fatal consumer error: nothing would settle or expire them
            log.error("the client's result reader failed", error=str(exc))
            self._pending.close(ClientClosed(f"the client's result reader failed: {exc}"))

    def route(self, message: Message) -> None:
        """Settle the futures of the id ``message`` answers (a result or a dead letter)."""
        try:
            outcome = read_outcome(message, self._dead_letter_topic)
        except UnreadableOutcome as exc:
            log.warning("skipped a message that is not an outcome", error=str(exc))
            return
        if isinstance(outcome, DeadLettered):
            self._pending.reject(outcome.request_id, outcome)
        else:
            self._pending.resolve(outcome.id, outcome)
