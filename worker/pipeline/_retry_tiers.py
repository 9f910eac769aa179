"""Retry tiers: a record whose model call failed runs again later instead of being dead-lettered.

With tiers configured, ``RetryTiers`` sends a ``model_error`` record to the
topic of the next tier (through the dead-letter path, so with the same
``torchkafka.*`` headers: the reason, the error, where it came from and the
attempts so far) until the tiers run out; then, and for every other reason,
it is dead-lettered. ``torchkafka retries`` sends a tier's records back to the
input topic once the tier's delay has passed, with ``torchkafka.attempts``
set, which is how the next failure finds its tier.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchkafka.codecs import ATTEMPTS_HEADER
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.pipeline._deliveries import Publisher, ResultMessage
from torchkafka.worker.pipeline._records import Record

#: The reasons that may pass with time (a model's transient failure), and so are retried.
RETRIED_REASONS = frozenset({WorkerReason.MODEL_ERROR.value})


def attempts_before(record: Record) -> int:
    """How many runs of ``record`` failed before this one (0 unless a relay re-sent it)."""
    for key, value in record.headers:
        if key == ATTEMPTS_HEADER:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value or ""
            return int(text) if text.isdigit() else 0
    return 0


class RetryTiers:
    """A ``Publisher`` that routes model errors to retry topics (``topics``, in tier order)."""

    def __init__(self, publisher: Publisher, topics: Sequence[str]) -> None:
        self._publisher = publisher
        self._topics = tuple(topics)

    def results(self, results: Sequence[ResultMessage]) -> None:
        """Publish the results as they are."""
        self._publisher.results(results)

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        """Send a retried reason to the next tier while one is left; else dead-letter it."""
        failed = attempts_before(record) + 1
        tier = failed - 1
        if topic is None and reason in RETRIED_REASONS and tier < len(self._topics):
            topic = self._topics[tier]
        self._publisher.dead_letter(record, reason, error, request_id, max(attempts, failed), topic)
