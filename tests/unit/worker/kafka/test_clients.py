"""The worker's Kafka clients: one connection, errors observed, bad settings refused clearly."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from structlog.testing import capture_logs

from torchkafka.worker import StartupError
from torchkafka.worker.config import KafkaConnection
from torchkafka.worker.kafka import make_consumer, make_producer
from torchkafka.worker.kafka._clients import log_client_error


def test_client_errors_are_logged_as_warnings_or_errors_when_fatal() -> None:
    with capture_logs() as logs:
        log_client_error(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))
        log_client_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert [(e["log_level"], e["code"], e["fatal"]) for e in logs] == [
        ("warning", "_TRANSPORT", False),
        ("error", "_FATAL", True),
    ]


def test_a_setting_librdkafka_refuses_is_a_startup_error_naming_it() -> None:
    connection = KafkaConnection(consumer={"session.timeout.msec": "100"})
    with pytest.raises(
        StartupError, match=r"cannot create the Kafka consumer: .*session\.timeout\.msec"
    ):
        make_consumer(connection, {"group.id": "g"})
    with pytest.raises(StartupError, match="cannot create the Kafka producer"):
        make_producer(KafkaConnection(producer={"linger.ms": "soon"}), {})
