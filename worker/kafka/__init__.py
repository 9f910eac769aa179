"""The Kafka edge: the polling loop, records in from the consumer, results out through the producer.

``WorkerLoop`` is the only place that consumes, pauses, commits and handles
rebalances; ``KafkaPublisher`` implements the pipeline's ``Publisher``.
"""

from torchkafka.worker.kafka._clients import (
    ClientReport,
    make_admin,
    make_consumer,
    make_producer,
)
from torchkafka.worker.kafka._commits import CommitResults
from torchkafka.worker.kafka._consumer import (
    assign_paused,
    is_record,
    record_from_message,
    topic_partitions,
)
from torchkafka.worker.kafka._group import group_has_commits
from torchkafka.worker.kafka._loop import LoopTimings, WorkerLoop
from torchkafka.worker.kafka._publisher import KafkaPublisher

__all__ = [
    "ClientReport",
    "CommitResults",
    "KafkaPublisher",
    "LoopTimings",
    "WorkerLoop",
    "assign_paused",
    "group_has_commits",
    "is_record",
    "make_admin",
    "make_consumer",
    "make_producer",
    "record_from_message",
    "topic_partitions",
]
