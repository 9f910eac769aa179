"""The group's history at start-up: a busy coordinator is asked again, other errors stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from torchkafka.worker import StartupError
from torchkafka.worker.kafka import group_has_commits


@dataclass
class Coordinator:
    """A consumer whose ``committed`` raises ``errors`` first, then returns ``offsets``."""

    offsets: list[int]
    errors: list[int] = field(default_factory=list)
    asked: int = 0

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        partitions = dict.fromkeys(range(len(self.offsets)))
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=partitions)})

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [
            TopicPartition(tp.topic, tp.partition, o)
            for tp, o in zip(partitions, self.offsets, strict=True)
        ]


def test_a_group_with_a_commit_has_history_and_a_new_one_has_none() -> None:
    assert group_has_commits(Coordinator([-1001, 5]), "in", 5.0)  # type: ignore[arg-type]
    assert not group_has_commits(Coordinator([-1001, -1001]), "in", 5.0)  # type: ignore[arg-type]


def test_a_coordinator_that_is_moving_or_loading_is_asked_again() -> None:
    busy = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
    consumer = Coordinator([3], errors=busy)
    assert group_has_commits(consumer, "in", 5.0)  # type: ignore[arg-type]
    assert consumer.asked == 3


def test_other_errors_and_a_coordinator_busy_past_the_timeout_stop_the_start() -> None:
    refused = Coordinator([3], errors=[KafkaError.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(StartupError, match="committed offsets on in"):
        group_has_commits(refused, "in", 5.0)  # type: ignore[arg-type]
    busy = Coordinator([3], errors=[KafkaError.NOT_COORDINATOR] * 100)
    with pytest.raises(StartupError, match=r"Not coordinator|NOT_COORDINATOR"):
        group_has_commits(busy, "in", 0.5)  # type: ignore[arg-type]
