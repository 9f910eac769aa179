"""What the consumer group has done before this worker: its committed offsets."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from torchkafka.worker._errors import StartupError
from torchkafka.worker.kafka._clients import kafka_error

#: Answers of a group coordinator that is moving or loading (a broker just started or
#: failed over): asked again until the deadline.
_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)
#: The wait before asking a busy coordinator again.
RETRY_S = 0.2


def group_has_commits(consumer: Consumer, topic: str, timeout_s: float) -> bool:
    """Whether ``consumer``'s group has committed an offset on any partition of ``topic``.

    Asked at start-up, before the consumer subscribes. A coordinator that is
    moving or loading is asked again; one that has not answered within
    ``timeout_s``, or any other error, is a ``StartupError``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _has_commits(consumer, topic, max(0.5, deadline - time.monotonic()))
        except KafkaException as exc:
            error = kafka_error(exc)
            busy = error is not None and error.code() in _COORDINATOR_BUSY
            if not busy or time.monotonic() + RETRY_S >= deadline:
                message = f"cannot read the group's committed offsets on {topic}: {exc}"
                raise StartupError(message) from exc
        time.sleep(RETRY_S)


def _has_commits(consumer: Consumer, topic: str, timeout_s: float) -> bool:
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    committed = consumer.committed(partitions, timeout=timeout_s)
    return any(tp.offset >= 0 for tp in committed)
