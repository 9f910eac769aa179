"""Commit results: which commits the broker refused, so that they are sent again.

An asynchronous commit refused during a rebalance (ILLEGAL_GENERATION,
REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID) is reported only through
librdkafka's ``on_commit`` callback. Each commit point is otherwise sent
once, so a refused one would leave the group's committed offset behind every
answered record until the next record of that partition: false lag, and a
large redo after a crash. The loop re-sends the latest commit points of its
partitions after a refusal.
"""

from __future__ import annotations

import structlog
from confluent_kafka import KafkaError, TopicPartition

log = structlog.get_logger(__name__)


class CommitResults:
    """``on_commit`` for the consumer: remembers that a commit was refused."""

    def __init__(self) -> None:
        self._refused = False

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback (it runs inside ``consume`` or ``close``).

        The loop reports its refused synchronous commits here too.
        """
        failed = [tp for tp in partitions if tp.error is not None]
        if error is None and not failed:
            return
        reason = str(error if error is not None else failed[0].error)
        log.info(
            "commit refused; sent again while the partitions are this worker's",
            error=reason,
            partitions=sorted((tp.topic, tp.partition) for tp in failed or partitions),
        )
        self._refused = True

    def take_refused(self) -> bool:
        """Whether a commit was refused since the last call."""
        refused, self._refused = self._refused, False
        return refused
