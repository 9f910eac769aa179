"""The result stream: results and dead letters yielded, the rest counted, sync and async."""

from __future__ import annotations

import asyncio

import torch
from confluent_kafka import Message

from torchkafka.client import DeadLettered, ResultStream
from torchkafka.codecs import (
    DeadLetterInfo,
    ModelInfo,
    Request,
    Result,
    dead_letter_headers,
    encode_request,
    encode_result,
)

INFO = DeadLetterInfo("model_error", "boom", "requests", 0, 3, 1, "w", 0)


class ListConsumer:
    """Gives its messages as fast as asked for, then nothing."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.closed = False

    def poll(self, timeout: float) -> Message | None:
        return self.messages.pop(0) if self.messages else None

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        taken, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return taken

    def close(self) -> None:
        self.closed = True


def messages() -> list[Message]:
    result = encode_result(Result(id="a", outputs={"y": torch.ones(1)}, model=ModelInfo("m", "1")))
    request = encode_request(Request(id="b", inputs={"x": torch.ones(1)}))
    return [
        Message(topic="results", partition=0, offset=0, value=result),
        Message(topic="results", partition=0, offset=1, value=b"\xc1"),
        Message(
            topic="dlq", partition=1, offset=7, value=request, headers=dead_letter_headers([], INFO)
        ),
    ]


def test_results_and_dead_letters_are_yielded_and_the_rest_is_counted() -> None:
    said: list[str] = []
    consumer = ListConsumer(messages())
    stream = ResultStream(consumer, "dlq", on_unreadable=said.append)  # type: ignore[arg-type]
    result, dead = stream.poll()
    assert isinstance(result, Result)
    assert result.id == "a"
    assert isinstance(dead, DeadLettered)
    assert (dead.request_id, dead.reason) == ("b", "model_error")
    assert stream.unreadable == 1
    assert len(said) == 1
    assert said[0].startswith("undecodable message at results[0]@1: malformed_msgpack: ")
    with stream:
        pass
    assert consumer.closed
    assert list(stream) == []  # a closed stream ends


def test_async_iteration_reads_on_a_thread_and_ends_when_closed() -> None:
    consumer = ListConsumer(messages())
    stream = ResultStream(consumer, "dlq", on_unreadable=lambda _text: None)  # type: ignore[arg-type]

    async def read_two() -> list[str]:
        seen = []
        async for outcome in stream:
            seen.append(outcome.id if isinstance(outcome, Result) else outcome.request_id)
            if len(seen) == 2:
                await stream.aclose()
        return seen

    assert asyncio.run(read_two()) == ["a", "b"]
    assert consumer.closed
