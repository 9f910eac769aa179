"""Routing: a result settles its id, a dead letter fails it with its reason; the rest is skipped."""

from __future__ import annotations

import pytest
import torch
from confluent_kafka import KafkaError, KafkaException, Message

from torchkafka.client import ClientClosed, DeadLettered
from torchkafka.client._pending import Pending
from torchkafka.client._router import ResultRouter
from torchkafka.codecs import (
    DeadLetterInfo,
    ModelInfo,
    Request,
    Result,
    dead_letter_headers,
    encode_request,
    encode_result,
)

Headers = list[tuple[str, str | bytes | None]]


def message(topic: str, value: bytes, headers: Headers | None = None) -> Message:
    return Message(topic=topic, partition=0, offset=1, value=value, headers=headers or [])


def router(pending: Pending[Result]) -> ResultRouter:
    return ResultRouter(None, "results", "dlq", pending)  # type: ignore[arg-type]


def test_a_result_resolves_its_id() -> None:
    pending: Pending[Result] = Pending(10)
    future = pending.add("r-1", 60.0)
    value = encode_result(
        Result(id="r-1", outputs={"output": torch.ones(2)}, model=ModelInfo("m", "1"))
    )
    router(pending).route(message("results", value))
    assert future.result(0).outputs["output"].tolist() == [1.0, 1.0]


def test_a_dead_letter_fails_its_id_with_the_reason() -> None:
    pending: Pending[Result] = Pending(10)
    future = pending.add("r-2", 60.0)
    value = encode_request(Request(id="r-2", inputs={"x": torch.zeros(3)}))
    info = DeadLetterInfo("unsupported_dtype", "int16 is not accepted", "in", 0, 5, 1, "w", 0)
    router(pending).route(message("dlq", value, dead_letter_headers([], info)))
    with pytest.raises(DeadLettered) as failed:
        future.result(0)
    assert (failed.value.reason, failed.value.error) == (
        "unsupported_dtype",
        "int16 is not accepted",
    )


def test_what_no_future_awaits_or_cannot_be_read_is_skipped() -> None:
    pending: Pending[Result] = Pending(10)
    future = pending.add("r-3", 60.0)
    routes = router(pending)
    routes.route(message("results", b"\xc1"))  # not a result
    routes.route(message("dlq", b"\xc1", []))  # no id to read
    other = encode_request(Request(id="r-3", inputs={"x": torch.zeros(3)}))
    routes.route(message("dlq", other, [("trace", b"x")]))  # no dead-letter headers
    assert not future.done()


class FailingConsumer:
    """A consumer whose every poll raises a fatal error."""

    def poll(self, timeout: float) -> Message:
        raise KafkaException(KafkaError(KafkaError._FATAL, "fenced"))


def test_a_reader_that_fails_fails_what_waits_and_what_comes_instead_of_stalling() -> None:
    pending: Pending[Result] = Pending(10)
    future = pending.add("r-4", 60.0)
    ResultRouter(FailingConsumer(), "results", "dlq", pending)._run()  # type: ignore[arg-type]
    with pytest.raises(ClientClosed, match=r"result reader failed: .*fenced"):
        future.result(0)
    with pytest.raises(ClientClosed, match="result reader failed"):
        pending.add("r-5", 60.0)
