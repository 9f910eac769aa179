"""Positions at the topics' ends: a partition whose leader is moving is asked again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from torchkafka.client._consumers import end_positions


class MetadataConsumer:
    """Two partitions of ``results``; the first watermark answers are ``refusals``."""

    def __init__(self, refusals: list[int]) -> None:
        self.refusals = refusals
        self.asked = 0

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        partitions = {0: None, 1: None}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=partitions)})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.refusals:
            raise KafkaException(KafkaError(self.refusals.pop(0)))
        return 0, 10 + tp.partition


def test_a_moving_leader_is_waited_out() -> None:
    consumer = MetadataConsumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 2)
    positions = end_positions(consumer, ["results"], timeout_s=5)  # type: ignore[arg-type]
    assert [(p.partition, p.offset) for p in positions] == [(0, 10), (1, 11)]
    assert consumer.asked == 4


def test_any_other_refusal_is_raised_at_once() -> None:
    consumer = MetadataConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        end_positions(consumer, ["results"], timeout_s=5)  # type: ignore[arg-type]
    assert consumer.asked == 1
