"""The worker's Kafka clients, built from the one connection and observed through its logs.

librdkafka's own log lines go to the stdlib logger ``torchkafka.librdkafka``
(which ``configure_logging`` renders like every other event), and client
errors that no call returns (a broker down, authentication refused) are
logged by ``error_cb`` instead of vanishing. The admin client of the start-up
check hands both to a ``ClientReport`` instead, so that a failed check ends in
one line, not in one per reconnection.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
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
#: Client errors that say a broker refused the client (credentials, TLS): waiting does not help.
_REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})
#: What librdkafka puts before a log line's text: "FAC [client] [thrd:name]: ".
_LOG_PREFIX = re.compile(r"^.*?\[thrd:[^\]]*\]: ")
#: How long after connecting it failed: the same failure reads the same without it.
_AFTER = re.compile(r"\(after \d+ms in state (\w+)\)")


def kafka_error(exc: KafkaException) -> KafkaError | None:
    """The ``KafkaError`` a confluent-kafka exception carries, if it carries one."""
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


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


class ClientReport:
    """What a client said (its ``error_cb`` and its log lines), kept instead of logged.

    ``cause()`` is the most telling of it: the most severe line, then the
    most repeated one. ``refused`` is set by a refusal (credentials, TLS).
    """

    def __init__(self) -> None:
        self.refused = False
        self._said: Counter[tuple[int, str]] = Counter()

    def error(self, error: KafkaError) -> None:
        """``error_cb``: notes a refusal; the log lines carry the text."""
        self.refused |= error.code() in _REFUSALS

    def log(self, level: int, message: str, *args: object) -> None:
        """The ``logger`` interface librdkafka calls, with a stdlib level."""
        text = _AFTER.sub(r"(in state \1)", _LOG_PREFIX.sub("", message % args))
        self._said[level, text] += 1

    def cause(self) -> str | None:
        """The most severe, then most repeated, line; None if the client said nothing."""
        if not self._said:
            return None
        (_level, text), _count = max(self._said.items(), key=lambda said: (said[0][0], said[1]))
        return text


def observed(connection: KafkaConnection) -> dict[str, Any]:
    """The connection's settings, with librdkafka's logs and errors routed to the worker's."""
    return {**connection.librdkafka(), "logger": LIBRDKAFKA_LOGGER, "error_cb": log_client_error}


def make_consumer(connection: KafkaConnection, worker: Mapping[str, Any]) -> Consumer:
    """The worker's consumer: its own settings, then the user's consumer settings on top."""
    return _client(Consumer, {**observed(connection), **worker, **connection.consumer})


def make_producer(connection: KafkaConnection, worker: Mapping[str, Any]) -> Producer:
    """The worker's producer: its own settings, then the user's producer settings on top."""
    return _client(Producer, {**observed(connection), **worker, **connection.producer})


def make_admin(connection: KafkaConnection, report: ClientReport | None = None) -> AdminClient:
    """An admin client on the same connection; what it says goes to ``report`` if given."""
    settings = observed(connection)
    if report is not None:
        settings |= {"logger": report, "error_cb": report.error}
    return _client(AdminClient, settings)


def _client(kind: type[C], settings: dict[str, Any]) -> C:
    try:
        return kind(settings)
    except (KafkaException, ValueError, TypeError) as exc:  # a setting librdkafka refuses
        raise StartupError(f"cannot create the Kafka {kind.__name__.lower()}: {exc}") from exc
