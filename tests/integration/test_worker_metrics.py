"""A running worker's /metrics, /healthz and /readyz report what it really did."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import (
    RunningWorker,
    Topics,
    config_for,
    produce,
    read,
    request_value,
)
from tests.integration.streams import readiness
from tests.support.ports import free_port, get
from tests.support.worker_models import POISON
from torchkafka.codecs import Request, encode_request
from torchkafka.codecs.testing import malformed_corpus

MALFORMED = ("truncated", "unknown dtype", "wrong byte count", "missing id")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    status, _, text = get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def worker_with_endpoints(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str]
) -> Iterator[tuple[RunningWorker, Topics, int]]:
    topics = Topics(new_topic)
    port = free_port()
    config = config_for(
        topics, kafka_bootstrap, redis_url, metrics_port=port, metrics_host="127.0.0.1"
    )
    worker = RunningWorker(config)
    yield worker, topics, port
    if worker.thread.is_alive():
        worker.close()


def test_the_endpoints_report_the_work_done_and_close_on_stop(
    kafka_bootstrap: str, worker_with_endpoints: tuple[RunningWorker, Topics, int]
) -> None:
    worker, topics, port = worker_with_endpoints
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: readiness(port) == (200, "ready\n"), "readiness")
    # Joined (ready) comes within the loop's first iteration, alive at its end.
    wait_for(lambda: get(f"{base}/healthz")[::2] == (200, "ok\n"), "liveness")

    rows = {f"m-{i}": torch.randn(4) for i in range(30)}
    bad = [case for case in malformed_corpus() if case.name in MALFORMED]
    values = [(rid.encode(), request_value(rid, row)) for rid, row in rows.items()]
    values += [(b"poison", request_value("poison", torch.tensor([POISON, 0.0, 0.0, 0.0])))]
    values += [(b"no-x", encode_request(Request(id="no-x", inputs={"y": torch.zeros(4)})))]
    values += [(case.name.encode(), case.data) for case in bad]
    produce(kafka_bootstrap, topics.input, values)
    assert len(read(kafka_bootstrap, topics.output, expect=len(rows))) == len(rows)
    duplicates = [(rid.encode(), request_value(rid, rows[rid])) for rid in list(rows)[:5]]
    produce(kafka_bootstrap, topics.input, duplicates)  # done by now: skipped
    consumed = len(values) + len(duplicates)
    dead = len(bad) + 2

    def settled() -> bool:
        samples = scrape(base)
        return (
            metric(samples, "torchkafka_messages_consumed_total") == consumed
            and metric(samples, "torchkafka_dedup_skipped_total") == len(duplicates)
            and metric(samples, "torchkafka_messages_produced_total", outcome="dead_letter") == dead
        )

    wait_for(settled, "every record to be counted")
    samples = scrape(base)
    assert metric(samples, "torchkafka_messages_produced_total", outcome="result") == len(rows)
    assert metric(samples, "torchkafka_end_to_end_seconds_count", outcome="result") == len(rows)
    assert metric(samples, "torchkafka_done_mark_delay_seconds_count") == len(rows)
    reasons = Counter(case.error.reason.value for case in bad)
    reasons.update(["model_error", "unusable_input"])
    for reason, count in reasons.items():
        assert metric(samples, "torchkafka_dead_letters_total", reason=reason) == count, reason
    assert metric(samples, "torchkafka_dead_letters_total", reason="expired") == 0
    batches = metric(samples, "torchkafka_batch_size_count")
    assert batches is not None
    assert batches > 0
    # every input that reached the model and got a result waited in the batcher once
    waits = metric(samples, "torchkafka_queue_wait_seconds_count")
    assert waits is not None
    assert waits >= len(rows)
    assert metric(samples, "torchkafka_paused") == 0
    assert metric(samples, "torchkafka_redis_outage") == 0

    def caught_up() -> bool:
        lags = [v for (name, _), v in scrape(base).items() if name == "torchkafka_consumer_lag"]
        return bool(lags) and all(lag == 0 for lag in lags)

    wait_for(caught_up, "the consumer lag to show 0", timeout_s=20)
    assert get(f"{base}/healthz")[::2] == (200, "ok\n")

    worker.close()
    with pytest.raises(urllib.error.URLError):
        get(f"{base}/readyz")
