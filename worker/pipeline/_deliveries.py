"""What the pipeline publishes and what comes back: the ``Publisher`` interface and deliveries.

The pipeline steps publish through ``Publisher``; the polling loop also
collects the broker's answers through ``Outbox``. The Kafka edge implements
both (``torchkafka.worker.kafka.KafkaPublisher``); tests do it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from torchkafka.worker._errors import DeliveryFailed
from torchkafka.worker.pipeline._records import Record


class Outcome(Enum):
    """What was published for an input record."""

    RESULT = "result"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The broker's answer for what was published for ``record``."""

    record: Record
    outcome: Outcome
    error: DeliveryFailed | None
    request_id: str | None  # None for a dead letter whose request could not be read
    #: When it was handed to the producer (``time.monotonic``).
    published_s: float


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """An encoded result, ready to publish, and the input record it answers."""

    record: Record
    request_id: str
    value: bytes


class Publisher(Protocol):
    """Publishes one result or one dead letter per input record; any thread may call it."""

    def results(self, results: Sequence[ResultMessage]) -> None:
        """Publish each result (key = its input's key), a batch at a time."""
        ...

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        """Publish ``record`` unchanged to the dead-letter topic, with why and where.

        ``topic``: to that topic instead (a retry tier's), the same way.
        """
        ...


class Outbox(Publisher, Protocol):
    """A publisher whose deliveries the polling loop collects and waits for."""

    def completed(self, timeout_s: float = 0.0) -> list[Delivery]:
        """Serve delivery reports for up to ``timeout_s``; every delivery finished since."""
        ...

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; how many are still outstanding."""
        ...


def result_ids(deliveries: list[Delivery]) -> list[str]:
    """The request ids of the results among ``deliveries``: those that get done-marks."""
    return [d.request_id for d in deliveries if d.outcome is Outcome.RESULT and d.request_id]
