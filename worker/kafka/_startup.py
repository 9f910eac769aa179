"""Kafka at start-up: the topics checked (and their size limits read), transactions begun.

What the admin client says while start-up waits goes to a ``ClientReport``,
not the log, so that a failed start ends in one line.
"""

from __future__ import annotations

import socket
import time

import structlog
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import WorkerConfig
from torchkafka.worker.kafka._clients import ClientReport, make_admin

log = structlog.get_logger(__name__)

#: Start-up asks Kafka for its topics with this patience first, then twice as much each time.
FIRST_ASK_S = 1.0
#: Exactly-once: the broker aborts a transaction open longer (as Kafka Streams does).
TRANSACTION_TIMEOUT_MS = 10_000


def transactional_settings(config: WorkerConfig, worker_index: int) -> dict[str, str | int]:
    """Exactly-once producer settings: worker ``worker_index``'s stable transactional.id."""
    prefix = config.transactional_id or f"{config.group_id}.{socket.gethostname()}"
    return {
        "transactional.id": f"{prefix}-{worker_index}",
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def init_transactions(producer: Producer, deadline: float) -> None:
    """Register the transactional.id (fencing and aborting a predecessor's), begin one."""
    try:
        producer.init_transactions(max(1.0, deadline - time.monotonic()))
        producer.begin_transaction()
    except KafkaException as exc:
        raise StartupError(f"cannot start Kafka transactions: {exc.args[0]}") from exc


def check_topics(config: WorkerConfig, deadline: float) -> int | None:
    """Check that the topics exist; the smallest ``max.message.bytes`` of those written to.

    None if the topics' settings cannot be read (an ACL may deny it): the
    producer keeps its own limit then.
    """
    report = ClientReport()
    admin = make_admin(config.kafka, report)
    wanted = {config.input_topic, config.output_topic, config.dead_letter_topic}
    wanted |= {name for name, _ in config.retry_topics}
    missing = sorted(wanted - _kafka_topics(config, admin, report, deadline))
    if missing:
        raise StartupError(
            f"topics {missing} do not exist on {config.kafka.bootstrap}; create them first "
            "(torchkafka topics apply --yes, with the same settings)"
        )
    written = sorted(wanted - {config.input_topic})  # the output, dead-letter and retry topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in written]
    try:
        described = admin.describe_configs(resources, request_timeout=FIRST_ASK_S * 10)
        limits = [int(future.result()["max.message.bytes"].value) for future in described.values()]
    except (KafkaException, KeyError, ValueError) as exc:
        log.warning("cannot read the topics' max.message.bytes", error=str(exc))
        return None
    return min(limits)


def _kafka_topics(
    config: WorkerConfig, admin: AdminClient, report: ClientReport, deadline: float
) -> set[str]:
    """The cluster's topics, asked for with more patience each time until ``deadline``.

    What ``admin`` says meanwhile goes to its ``report``, not the log: a
    broker that refuses the worker (credentials, TLS) ends the wait at once,
    and the ``StartupError`` names the most telling thing the client said.
    """
    patience_s = min(FIRST_ASK_S, config.operations.startup_timeout_s)
    while True:
        began = time.monotonic()
        try:
            return set(admin.list_topics(timeout=patience_s).topics)
        except KafkaException as exc:
            admin.poll(0)  # hands what the client said to the report
            if report.refused or began + patience_s >= deadline:
                raise StartupError(_kafka_failure(config, report, exc)) from exc
        time.sleep(max(0.0, began + patience_s - time.monotonic()))
        patience_s = min(2 * patience_s, deadline - began - patience_s)


def _kafka_failure(config: WorkerConfig, report: ClientReport, error: KafkaException) -> str:
    """The start-up error's text: refused, or no answer in time, and what the client said."""
    cause = report.cause() or str(error)
    bootstrap = config.kafka.bootstrap
    if report.refused:
        return f"Kafka at {bootstrap} refused the worker: {cause}"
    timeout_s = config.operations.startup_timeout_s
    return f"Kafka at {bootstrap} does not answer within {timeout_s:g} s: {cause}"
