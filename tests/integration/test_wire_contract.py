"""Points of docs/wire-format.md that only a worker on the real broker shows."""

from __future__ import annotations

from collections.abc import Callable

import torch
from confluent_kafka import Message, Producer

from tests.integration.helpers import (
    IMAGE_MODEL,
    RunningWorker,
    Topics,
    config_for,
    produce,
    read,
    request_value,
)
from tests.support.pictures import picture
from tests.support.worker_models import POISON
from torchkafka.codecs import (
    DeadLetterInfo,
    Request,
    decode_result,
    encode_request,
    encoded_image,
    read_dead_letter_info,
)
from torchkafka.worker.config import WorkerConfig


def headers_of(message: Message) -> list[tuple[str, str | bytes | None]]:
    headers = message.headers()
    assert isinstance(headers, list)
    return headers


def info_of(message: Message) -> DeadLetterInfo:
    return read_dead_letter_info(headers_of(message))


def test_a_tombstone_and_headers_without_values_are_dead_lettered_as_they_came(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """Null stays null: the dead letter of a record without value has none, and a header
    without value keeps none (neither becomes empty bytes)."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topics.input, key=b"tombstone", value=None, headers=[("trace", None)])
    headers: list[tuple[str, str | bytes | None]] = [("trace", None), ("empty", b"")]
    producer.produce(topics.input, key=b"bad", value=b"\xc1", headers=headers)
    assert producer.flush(30) == 0
    worker = start_worker(config_for(topics, kafka_bootstrap, redis_url))
    dead = {m.key(): m for m in read(kafka_bootstrap, topics.dead_letters, expect=2)}
    worker.close()

    tombstone = dead[b"tombstone"]
    assert tombstone.value() is None
    assert headers_of(tombstone)[0] == ("trace", None)
    info = info_of(tombstone)
    assert (info.reason, info.error) == (
        "malformed_msgpack",
        "$: no value: the record's value is null (a tombstone)",
    )
    bad = dead[b"bad"]
    assert bad.value() == b"\xc1"
    assert headers_of(bad)[:2] == headers
    assert info_of(bad).reason == "malformed_msgpack"


def test_a_worker_dead_letters_what_its_model_cannot_take_before_running_it(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """imagenet preprocessing without input_dtype takes uint8 only: tensors of another
    dtype are unsupported_dtype, not model_error; images decode to uint8 and run."""
    sent: dict[str, torch.Tensor | bytes] = {
        "uint8": torch.zeros(3, 4, 4, dtype=torch.uint8),
        "image": picture("png", 4, 4, seed=1),
    }
    refused = [torch.int16, torch.int64, torch.float16, torch.float32, torch.float64]
    sent |= {
        str(dtype).removeprefix("torch."): torch.zeros(3, 4, 4, dtype=dtype) for dtype in refused
    }
    values = [
        (
            rid.encode(),
            encode_request(Request(rid, {"x": encoded_image(x) if isinstance(x, bytes) else x})),
        )
        for rid, x in sent.items()
    ]
    config = config_for(
        topics, kafka_bootstrap, redis_url, model=IMAGE_MODEL, preprocess="imagenet"
    )
    worker = start_worker(config)
    produce(kafka_bootstrap, topics.input, values)
    results = read(kafka_bootstrap, topics.output, expect=2)
    dead = read(kafka_bootstrap, topics.dead_letters, expect=len(refused))
    worker.close()

    assert {decode_result(m.value() or b"").id for m in results} == {"uint8", "image"}
    reasons = {(m.key() or b"").decode(): info_of(m) for m in dead}
    assert set(reasons) == set(sent) - {"uint8", "image"}
    for name, info in reasons.items():
        assert info.reason == "unsupported_dtype"
        assert info.error == (
            f"$.inputs['x'].dtype: {name} is not taken: this worker's model takes uint8 "
            "(its input_dtype)"
        )


def test_an_id_that_was_dead_lettered_is_not_answered_so_a_valid_copy_gets_a_result(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """Only results mark an id done: one refused before running (no input x) and one that
    made the model raise are answered when sent again, valid."""
    bad = [
        (b"no-x", encode_request(Request("no-x", {"y": torch.zeros(4)}))),
        (b"poison", request_value("poison", torch.tensor([POISON, 0.0, 0.0, 0.0]))),
    ]
    worker = start_worker(config_for(topics, kafka_bootstrap, redis_url))
    produce(kafka_bootstrap, topics.input, bad)
    dead = read(kafka_bootstrap, topics.dead_letters, expect=2)
    assert sorted(info_of(m).reason for m in dead) == ["model_error", "unusable_input"]
    valid = [(key, request_value(key.decode(), torch.ones(4))) for key, _ in bad]
    produce(kafka_bootstrap, topics.input, valid)
    results = read(kafka_bootstrap, topics.output, expect=2)
    worker.close()
    assert sorted(decode_result(m.value() or b"").id for m in results) == ["no-x", "poison"]
