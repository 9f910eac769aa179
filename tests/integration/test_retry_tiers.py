"""Retry tiers against the real broker: a transient model error is answered after a retry, a
lasting one is dead-lettered after the last tier, with its attempts counted."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from tests.integration.helpers import (
    RunningWorker,
    Topics,
    config_for,
    produce,
    read,
    request_value,
)
from tests.support.worker_models import FLAKY, POISON
from torchkafka.codecs import DeadLetterInfo, decode_result, read_dead_letter_info
from torchkafka.topology import TopicSpec, delete_topics, ensure_topics
from torchkafka.worker.tools import run_retries

MODEL = "python:tests.support.worker_models:flaky_linear"
DELAY_S = 2


def keyed(request_id: str, first: float, second: float) -> tuple[bytes, bytes]:
    row = torch.tensor([first, second, 0.0, 0.0])
    return request_id.encode(), request_value(request_id, row)


def info_of(message: Message) -> DeadLetterInfo:
    headers = message.headers() or []
    assert isinstance(headers, list)
    return read_dead_letter_info(headers)


@pytest.fixture
def retry_topic(kafka_admin: AdminClient, topics: Topics) -> Iterator[str]:
    name = f"{topics.input}.retry.1"
    ensure_topics(kafka_admin, [TopicSpec(name, partitions=4)])
    yield name
    delete_topics(kafka_admin, [name])


def test_a_transient_model_error_is_answered_after_a_retry_and_a_lasting_one_dead_lettered(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    retry_topic: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    config = config_for(topics, kafka_bootstrap, redis_url, model=MODEL, retry_delays_s=(DELAY_S,))
    assert config.retry_topics == ((retry_topic, DELAY_S),)
    stop = threading.Event()
    relay = threading.Thread(target=run_retries, args=(config, stop), daemon=True)
    relay.start()
    start_worker(config)
    try:
        requests = [keyed(f"ok-{n}", float(n), 0.0) for n in range(3)]
        requests += [keyed(f"flaky-{n}", FLAKY, float(n)) for n in range(2)]
        requests.append(keyed("poison", POISON, 0.0))
        produce(kafka_bootstrap, topics.input, requests)

        answered = Counter(
            decode_result(m.value() or b"").id for m in read(kafka_bootstrap, topics.output, 5)
        )
        assert answered == Counter(["ok-0", "ok-1", "ok-2", "flaky-0", "flaky-1"])
        (letter,) = read(kafka_bootstrap, topics.dead_letters, 1)
        info = info_of(letter)
        assert (letter.key(), info.reason, info.attempts) == (b"poison", "model_error", 2)
        retried = read(kafka_bootstrap, retry_topic, 3)
        assert sorted(m.key() or b"" for m in retried) == [b"flaky-0", b"flaky-1", b"poison"]
        assert [info_of(m).attempts for m in retried] == [1, 1, 1]
    finally:
        stop.set()
        relay.join(30)
