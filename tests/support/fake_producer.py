"""A producer with a bounded local queue whose deliveries happen when it is polled."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaError


class FakeError(KafkaError):
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class FakeProducer:
    """A producer whose queue holds ``capacity`` messages; poll/flush deliver them."""

    def __init__(
        self, capacity: int = 1000, fail: Callable[[bytes], str | None] = lambda key: None
    ) -> None:
        self.capacity = capacity
        self.fail = fail
        self.queued: list[tuple[str, bytes, bytes, Callable[..., None]]] = []
        self.delivered: list[tuple[str, bytes, bytes]] = []
        self.polls: list[float] = []
        self.stuck = 0  # messages flush() cannot deliver

    def produce(
        self, topic: str, *, key: bytes, value: bytes, on_delivery: Callable[..., None]
    ) -> None:
        if len(self.queued) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queued.append((topic, key, value, on_delivery))

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        if timeout == 0:
            return 0
        served = self.queued[: len(self.queued) - self.stuck]
        del self.queued[: len(served)]
        for topic, key, value, callback in served:
            error = self.fail(key)
            if error is None:
                self.delivered.append((topic, key, value))
            callback(None if error is None else FakeError(error), None)
        return len(served)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.queued)
