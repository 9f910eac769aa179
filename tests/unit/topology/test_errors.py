"""Admin failures become ``TopologyError`` texts that say what to check."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from torchkafka.topology import TopologyError
from torchkafka.topology._errors import admin_answer, answered


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")),
            "cannot do it: denied (the client's principal lacks an ACL for it)",
        ),
        (
            KafkaException(KafkaError(KafkaError._TRANSPORT, "refused")),
            "cannot do it: refused (no broker answered: check the bootstrap servers",
        ),
        (
            KafkaException(KafkaError(KafkaError.INVALID_CONFIG, "bad value")),
            "cannot do it: bad value",
        ),
        (TimeoutError(), "cannot do it: no answer within 2.5 s (no broker answered"),
    ],
)
def test_admin_answer_says_what_failed_and_what_to_check(raised: Exception, expected: str) -> None:
    with pytest.raises(TopologyError) as caught, admin_answer("cannot do it", 2.5):
        raise raised
    assert str(caught.value).startswith(expected)
    assert caught.value.__cause__ is raised


def future_of(outcome: Exception | None) -> Future[None]:
    future: Future[None] = Future()
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
    return future


def test_answered_takes_the_accepted_error_as_done_and_raises_any_other() -> None:
    exists = KafkaError.TOPIC_ALREADY_EXISTS
    assert answered(future_of(None), "create", 1, unless=exists)
    taken = KafkaException(KafkaError(exists, "exists"))
    assert not answered(future_of(taken), "create", 1, unless=exists)
    denied = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))
    with pytest.raises(TopologyError, match="create: denied"):
        answered(future_of(denied), "create", 1, unless=exists)
