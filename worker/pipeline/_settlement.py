"""Settlement: what the broker acknowledged gets its done-mark, then its offset may be committed.

Every consumed record is tracked. Its offset becomes committable once the
record is settled: skipped (its id is done), or its result or dead letter
acknowledged by the broker and, for a result, its done-mark written. While
Redis is away the marks, and the commits behind them, are held; fail-open
commits without them. Single-threaded: the polling loop owns it.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from torchkafka.worker._errors import TransientError
from torchkafka.worker.pipeline._admission import Gate
from torchkafka.worker.pipeline._dedup import Dedup
from torchkafka.worker.pipeline._deliveries import Delivery, result_ids
from torchkafka.worker.pipeline._offsets import OffsetTracker
from torchkafka.worker.pipeline._records import Record, TopicPartitionKey

log = structlog.get_logger(__name__)


class Settlement:
    """Tracks offsets and settles deliveries: done-marks first, then commit points."""

    def __init__(self, dedup: Dedup, gate: Gate, owner: str) -> None:
        self._dedup = dedup
        self._gate = gate
        self._owner = owner
        self._tracker: OffsetTracker[TopicPartitionKey] = OffsetTracker()
        self._held: list[Delivery] = []

    @property
    def holding(self) -> bool:
        """Whether acknowledged results wait for Redis to take their done-marks."""
        return bool(self._held)

    def track(self, records: Iterable[Record]) -> None:
        """Consumed ``records``: their offsets hold the commit point until settled."""
        for record in records:
            self._tracker.track(record.partition_key, record.offset)

    def skip(self, records: Iterable[Record]) -> None:
        """``records`` need no result (their ids are done): settled as they are."""
        for record in records:
            self._tracker.ack(record.partition_key, record.offset)

    def settle(self, deliveries: list[Delivery], fencing_token: int) -> None:
        """Done-mark the acknowledged results (and those held before), then settle them all.

        Raises the ``DeliveryFailed`` of a delivery the broker refused: librdkafka
        has retried it for ``delivery.timeout.ms`` already, so the worker stops
        without committing it, and a restarted worker processes the record again.
        """
        deliveries = self._held + deliveries
        if not deliveries:
            return
        for delivery in deliveries:
            if delivery.error is not None:
                raise delivery.error
        ids = result_ids(deliveries)
        try:
            self._dedup.mark_done(ids, self._owner, fencing_token)
        except TransientError as exc:
            if not self._gate.fail_open:
                log.warning("cannot write done-marks yet; holding commits", error=str(exc))
                self._held = deliveries
                return
            log.warning(
                "cannot write done-marks; committing without them (fail-open)",
                count=len(ids),
                error=str(exc),
            )
        self._held = []
        self._acknowledge(deliveries)

    def settle_without_marks(self) -> list[str]:
        """Settle the held deliveries without their done-marks; return their result ids.

        For shutdown, once Redis has had its time: committing a delivered result
        without its mark loses nothing, and the restarted group does not run its
        record again; only a later replay or re-submission of its id would get a
        second result. Holding the commit instead would redo every one of them.
        """
        held, self._held = self._held, []
        self._acknowledge(held)
        return result_ids(held)

    def committable(self) -> dict[TopicPartitionKey, int]:
        """The commit points that advanced since the last call."""
        return self._tracker.committable()

    def revoke(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Forget ``keys``; their final commit points.

        Held deliveries of ``keys`` stay held: their done-marks are still written
        when Redis answers (the new owner skips those ids once they are), but
        their offsets are no longer this worker's to commit.
        """
        return self._tracker.revoke(keys)

    def _acknowledge(self, deliveries: list[Delivery]) -> None:
        self._gate.settled(d.request_id for d in deliveries if d.request_id)
        for delivery in deliveries:
            self._tracker.ack(delivery.record.partition_key, delivery.record.offset)
