"""The dedup gate against the real Redis: claims of ids in flight and their renewal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import torch
from confluent_kafka import Producer

from tests.support.pictures import picture, pillow_pixels
from torchkafka.codecs import DEFAULT_LIMITS, EncodedImage, Request, encode_request, encoded_image
from torchkafka.worker.kafka import KafkaPublisher
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import (
    Admitted,
    DecodingImage,
    DedupStore,
    Gate,
    ImageDecoder,
    InputSpec,
    Record,
    RetrySettings,
)


@pytest.fixture
def store(redis_client: redis.Redis, key_prefix: str) -> DedupStore:
    store = DedupStore(redis_client, f"{key_prefix}ns", 60, 10_000, RetrySettings())
    store.check_state(pipeline_has_history=lambda: False)  # a new pipeline
    return store


@pytest.fixture
def gate(kafka_bootstrap: str, store: DedupStore) -> Iterator[Gate]:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})  # the gate publishes nothing here
    publisher = KafkaPublisher(producer, "out", "dead", "w1", WorkerMetrics())
    images = ImageDecoder(1)
    model_input = InputSpec("x", "uint8")  # the images' dtype
    yield Gate(publisher, store, DEFAULT_LIMITS, model_input, "w1", fail_open=False, images=images)
    images.close()
    producer.flush(5)


def admitted(request_id: str, offset: int) -> Admitted:
    record = Record("in", 0, offset, None, b"", [], 0.0)
    tensor = torch.zeros(1)
    return Admitted(record, Request(id=request_id, inputs={"x": tensor}), tensor)


def test_a_lost_claim_is_reported_once_and_the_others_are_renewed(
    gate: Gate, store: DedupStore, redis_client: redis.Redis
) -> None:
    admission = gate.gate([admitted("a", 0), admitted("b", 1), admitted("c", 2)], 1)
    assert [a.request.id for a in admission.admitted] == ["a", "b", "c"]
    redis_client.set(store.claim_key("a"), b"1:w2")  # taken over by another worker
    redis_client.delete(store.claim_key("b"))  # expired
    redis_client.pexpire(store.claim_key("c"), 1_000)

    assert gate.renew(1) == {"a", "b"}
    assert redis_client.pttl(store.claim_key("c")) > 5_000
    assert gate.renew(1) == set(), "lost claims are reported once"

    gate.settled(["a", "b"])
    assert gate.gate([admitted("b", 3)], 1).admitted, "a settled id can be claimed again"
    redis_client.delete(store.claim_key("b"))
    assert gate.renew(1) == {"b"}, "its new claim is renewed, and reported when lost"


def test_admitted_images_start_decoding_and_parked_ones_stay_encoded(
    gate: Gate, store: DedupStore, redis_client: redis.Redis
) -> None:
    data = picture("png", 8, 6, seed=1)
    redis_client.set(store.claim_key("held"), b"1:w2")  # another worker runs it
    records = [
        Record(
            "in", 0, offset, None, encode_request(Request(rid, {"x": encoded_image(data)})), [], 0
        )
        for offset, rid in enumerate(["mine", "held"])
    ]
    admission = gate.admit(records, 1)
    (mine,) = admission.admitted
    assert isinstance(mine.input, DecodingImage)
    assert torch.equal(mine.input.pixels.result(timeout=10), pillow_pixels(data))
    (held,) = admission.parked
    assert isinstance(held.input, EncodedImage)
