"""The Kafka edge: the polling loop, records in from the consumer, results out through the producer.

``WorkerLoop`` is the only place that consumes, pauses and handles
rebalances; it commits through a ``Committer`` (``OffsetCommits`` for
at-least-once, ``TransactionCommits`` for exactly-once).
``KafkaPublisher`` implements the pipeline's ``Publisher``.
"""

from torchkafka.worker.kafka._clients import (
    ClientReport,
    kafka_error,
    make_admin,
    make_consumer,
    make_producer,
)
from torchkafka.worker.kafka._commits import CommitResults, Committer, OffsetCommits
from torchkafka.worker.kafka._consumer import (
    assign_paused,
    is_record,
    record_from_message,
    topic_partitions,
)
from torchkafka.worker.kafka._group import group_has_commits
from torchkafka.worker.kafka._group_watch import STATISTICS_INTERVAL_MS, GroupWatch
from torchkafka.worker.kafka._loop import LoopTimings, WorkerLoop
from torchkafka.worker.kafka._publisher import KafkaPublisher
from torchkafka.worker.kafka._startup import (
    TRANSACTION_TIMEOUT_MS,
    check_topics,
    init_transactions,
    transactional_settings,
)
from torchkafka.worker.kafka._transactions import TransactionalOutbox, TransactionCommits

__all__ = [
    "STATISTICS_INTERVAL_MS",
    "TRANSACTION_TIMEOUT_MS",
    "ClientReport",
    "CommitResults",
    "Committer",
    "GroupWatch",
    "KafkaPublisher",
    "LoopTimings",
    "OffsetCommits",
    "TransactionCommits",
    "TransactionalOutbox",
    "WorkerLoop",
    "assign_paused",
    "check_topics",
    "group_has_commits",
    "init_transactions",
    "is_record",
    "kafka_error",
    "make_admin",
    "make_consumer",
    "make_producer",
    "record_from_message",
    "topic_partitions",
    "transactional_settings",
]
