"""What the consumer group has done before this worker: its committed offsets."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from torchkafka.worker._errors import StartupError


def group_has_commits(consumer: Consumer, topic: str, timeout_s: float) -> bool:
    """Whether ``consumer``'s group has committed an offset on any partition of ``topic``.

    Asked at start-up, before the consumer subscribes; a broker that does not
    answer within ``timeout_s`` is a ``StartupError``.
    """
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        committed = consumer.committed(partitions, timeout=timeout_s)
    except KafkaException as exc:
        raise StartupError(f"cannot read the group's committed offsets on {topic}: {exc}") from exc
    return any(tp.offset >= 0 for tp in committed)
