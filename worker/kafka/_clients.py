"""The worker's Kafka clients, built from the one connection and observed through its logs.

librdkafka's own log lines go to the stdlib logger ``torchkafka.librdkafka``
(which ``configure_logging`` renders like every other event), and client
errors that no call returns (a broker down, authentication refused) are
logged by ``error_cb`` instead of vanishing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import KafkaConnection

log = structlog.get_logger(__name__)

C = TypeVar("C", Consumer, Producer, AdminClient)

#: Where librdkafka's log lines go.
LIBRDKAFKA_LOGGER = logging.getLogger("torchkafka.librdkafka")


def log_client_error(error: KafkaError) -> None:
    """``error_cb``: a client error no call returned; fatal ones are logged as errors."""
    report = log.error if error.fatal() else log.warning
    report(
        "kafka client error",
        code=error.name(),
        error=error.str(),
        fatal=error.fatal(),
        retriable=error.retriable(),
    )


def observed(connection: KafkaConnection) -> dict[str, Any]:
    """The connection's settings, with librdkafka's logs and errors routed to the worker's."""
    return {**connection.librdkafka(), "logger": LIBRDKAFKA_LOGGER, "error_cb": log_client_error}


def make_consumer(connection: KafkaConnection, worker: Mapping[str, Any]) -> Consumer:
    """The worker's consumer: its own settings, then the user's consumer settings on top."""
    return _client(Consumer, {**observed(connection), **worker, **connection.consumer})


def make_producer(connection: KafkaConnection, worker: Mapping[str, Any]) -> Producer:
    """The worker's producer: its own settings, then the user's producer settings on top."""
    return _client(Producer, {**observed(connection), **worker, **connection.producer})


def make_admin(connection: KafkaConnection) -> AdminClient:
    """An admin client on the same connection."""
    return _client(AdminClient, observed(connection))


def _client(kind: type[C], settings: dict[str, Any]) -> C:
    try:
        return kind(settings)
    except (KafkaException, ValueError, TypeError) as exc:  # a setting librdkafka refuses
        raise StartupError(f"cannot create the Kafka {kind.__name__.lower()}: {exc}") from exc
