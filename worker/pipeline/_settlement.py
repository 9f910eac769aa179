"""Settlement: what the broker acknowledged (and Redis marked done) may be committed.

Every consumed record is tracked. Its offset becomes committable once the
record is settled: skipped (its id is done), or its result or dead letter
acknowledged by the broker and, for a result, its done-mark written
(``DoneMarks`` hands over deliveries only then). Single-threaded: the polling
loop owns it.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchkafka.worker.pipeline._admission import Gate
from torchkafka.worker.pipeline._deliveries import Delivery
from torchkafka.worker.pipeline._offsets import OffsetTracker
from torchkafka.worker.pipeline._records import Record, TopicPartitionKey


class Settlement:
    """Tracks offsets and settles marked deliveries into commit points."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._tracker: OffsetTracker[TopicPartitionKey] = OffsetTracker()

    def track(self, records: Iterable[Record]) -> None:
        """Consumed ``records``: their offsets hold the commit point until settled."""
        for record in records:
            self._tracker.track(record.partition_key, record.offset)

    def skip(self, records: Iterable[Record]) -> None:
        """``records`` need no result (their ids are done): settled as they are."""
        for record in records:
            self._tracker.ack(record.partition_key, record.offset)

    def settle(self, deliveries: list[Delivery]) -> None:
        """Settle ``deliveries`` (results done-marked, or marks given up).

        Raises the ``DeliveryFailed`` of a delivery the broker refused: librdkafka
        has retried it for ``delivery.timeout.ms`` already, so the worker stops
        without committing it, and a restarted worker processes the record again.
        """
        for delivery in deliveries:
            if delivery.error is not None:
                raise delivery.error
        self._gate.settled(d.request_id for d in deliveries if d.request_id)
        for delivery in deliveries:
            self._tracker.ack(delivery.record.partition_key, delivery.record.offset)

    def committable(self) -> dict[TopicPartitionKey, int]:
        """The commit points that advanced since the last call."""
        return self._tracker.committable()

    def revoke(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Forget ``keys``; their final commit points.

        Deliveries of ``keys`` still held for Redis get their done-marks when it
        answers (the new owner skips those ids once they are), but their
        offsets are no longer this worker's to commit.
        """
        return self._tracker.revoke(keys)
