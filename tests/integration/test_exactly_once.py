"""Exactly-once mode against the real broker: results, dead letters and offsets in one
transaction; an aborted transaction is invisible to read_committed readers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import torch
from confluent_kafka import KafkaException

from tests.integration.helpers import (
    RunningWorker,
    Topics,
    committed_equals_end,
    config_for,
    produce,
    read,
    request_value,
)
from torchkafka.codecs import Request, decode_result, encode_request, read_dead_letter_info
from torchkafka.worker.config import WorkerConfig


def result_ids(messages: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(decode_result(m.value() or b"").id for m in messages)


def wait_for_commits(bootstrap: str, config: WorkerConfig, topics: Topics) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if committed_equals_end(bootstrap, config.group_id, topics.input, 4):
                return
        except KafkaException:  # the group's coordinator is still loading
            pass
        assert time.monotonic() < deadline, "the commits did not reach the end offsets"
        time.sleep(0.5)


def test_every_input_gets_one_committed_result_and_the_offsets_reach_the_end(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    rows = {f"eos-{i}": torch.full((4,), float(i)) for i in range(200)}
    values = [(k.encode(), request_value(k, v)) for k, v in rows.items()]
    values += [(b"bad", b"not msgpack")]
    config = config_for(topics, kafka_bootstrap, redis_url, processing_guarantee="exactly-once")
    worker = start_worker(config)
    produce(kafka_bootstrap, topics.input, values)
    wait_for_commits(kafka_bootstrap, config, topics)
    worker.close()
    results = read(kafka_bootstrap, topics.output, expect=len(rows) + 1, timeout_s=10)
    assert result_ids(results) == Counter(list(rows))
    dead = read(kafka_bootstrap, topics.dead_letters, expect=2, timeout_s=5)
    assert len(dead) == 1


def test_an_aborted_transaction_is_invisible_and_its_records_run_again(
    kafka_bootstrap: str,
    redis_url: str,
    new_topic: Callable[..., str],
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """A result the broker refuses as too large fails its transaction: the abort hides
    the transaction's other results from read_committed readers, the records run
    again, and the refused one goes to the dead-letter topic at once."""
    topics = Topics(new_topic, output_config={"max.message.bytes": "20000"})
    meta = {"b": "x" * 30_000}
    big = encode_request(Request(id="big", inputs={"x": torch.zeros(4)}, meta=meta))
    rows = [(f"ok-{i}".encode(), request_value(f"ok-{i}", torch.ones(4))) for i in range(20)]
    # Under the producer's limit but over the topic's, "big" goes in a batch of its own
    # (the worker caps batch.size at the topic's limit) and the broker refuses it.
    values = [(b"a", v) for _, v in rows[:10]] + [(b"big", big)] + [(b"a", v) for _, v in rows[10:]]
    config = config_for(
        topics,
        kafka_bootstrap,
        redis_url,
        processing_guarantee="exactly-once",
        transaction_ms=1000,  # everything in one transaction
    )
    worker = start_worker(config)
    produce(kafka_bootstrap, topics.input, values)
    wait_for_commits(kafka_bootstrap, config, topics)
    worker.close()
    committed = read(kafka_bootstrap, topics.output, expect=len(rows) + 1, timeout_s=10)
    assert result_ids(committed) == Counter(f"ok-{i}" for i in range(20))
    everything = read(
        kafka_bootstrap,
        topics.output,
        expect=2 * len(rows) + 1,
        timeout_s=10,
        isolation="read_uncommitted",
    )
    aborted = result_ids(everything) - result_ids(committed)
    assert aborted, "no aborted results in the log: the transaction did not abort"
    dead = read(kafka_bootstrap, topics.dead_letters, expect=2, timeout_s=5)
    assert len(dead) == 1
    headers = dead[0].headers()
    assert isinstance(headers, list)
    assert read_dead_letter_info(headers).reason == "result_too_large"
