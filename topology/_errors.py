"""Errors of the topology layer (Kafka admin)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from torchkafka.codecs import TorchKafkaError


class TopologyError(TorchKafkaError):
    """Kafka refused or failed an admin operation (create, delete, describe)."""


#: Error codes that mean the client may not do it: an ACL is missing.
_DENIED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
#: Error codes that mean no broker answered.
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}


def admin_error(what: str, exc: KafkaException) -> TopologyError:
    """``TopologyError`` for a failed admin call; says what to check for the common causes."""
    error: KafkaError = exc.args[0]
    code = error.code()
    if code in _DENIED:
        hint = "the client's principal lacks an ACL for it"
    elif code in _UNREACHABLE:
        hint = "no broker answered: check the bootstrap servers and the security settings"
    else:
        hint = None
    text = f"{what}: {error.str()}"
    return TopologyError(f"{text} ({hint})" if hint else text)


@contextmanager
def admin_answer(what: str, timeout_s: float) -> Iterator[None]:
    """Turn a failed or unanswered admin call inside into ``TopologyError`` saying ``what``."""
    try:
        yield
    except KafkaException as exc:
        raise admin_error(what, exc) from exc
    except TimeoutError as exc:  # a future's result() that waited out its timeout
        raise TopologyError(
            f"{what}: no answer within {timeout_s:g} s (no broker answered: check the "
            "bootstrap servers and the security settings)"
        ) from exc


def answered(future: Future[Any], what: str, timeout_s: float, *, unless: int) -> bool:
    """Wait for an admin call's answer: True if it succeeded, False if it failed with the
    error code ``unless`` (an outcome the caller takes as done); else ``TopologyError``."""
    with admin_answer(what, timeout_s):
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != unless:
                raise
            return False
    return True
