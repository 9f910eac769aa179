"""WorkerMetrics: each call moves its own series; every name is declared and documented once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchkafka.codecs import Reason
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.ops import RetryKind, WorkerMetrics

DOC = Path(__file__).parents[4] / "docs" / "worker.md"


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name}{labels}"
    return sample


def exported_names(metrics: WorkerMetrics) -> list[str]:
    """The torchkafka_ metric names as scraped (counters with their _total)."""
    names = []
    for family in metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.append(family.name + suffix)
    return [name for name in names if name.startswith("torchkafka_")]


def test_counters_move_by_what_is_reported(metrics: WorkerMetrics) -> None:
    metrics.consumed(5)
    metrics.consumed(2)
    metrics.dedup_skipped(3)
    metrics.dead_lettered(Reason.MALFORMED_MSGPACK)
    metrics.dead_lettered(WorkerReason.EXPIRED)
    metrics.dead_lettered(WorkerReason.EXPIRED)
    metrics.retry(RetryKind.PARKED, 4)
    metrics.retry(RetryKind.REDIS)
    metrics.claims_lost(2)
    assert value(metrics, "torchkafka_messages_consumed_total") == 7
    assert value(metrics, "torchkafka_dedup_skipped_total") == 3
    assert value(metrics, "torchkafka_dead_letters_total", reason="malformed_msgpack") == 1
    assert value(metrics, "torchkafka_dead_letters_total", reason="expired") == 2
    assert value(metrics, "torchkafka_dead_letters_total", reason="model_error") == 0
    assert value(metrics, "torchkafka_retries_total", kind="parked") == 4
    assert value(metrics, "torchkafka_retries_total", kind="redis") == 1
    assert value(metrics, "torchkafka_retries_total", kind="batch_split") == 0
    assert value(metrics, "torchkafka_claims_lost_total") == 2


def test_deliveries_count_by_outcome_and_time_end_to_end(metrics: WorkerMetrics) -> None:
    metrics.delivered("result", [0.02])
    metrics.delivered("result", [3.0])
    metrics.delivered("dead_letter", [0.004])
    assert value(metrics, "torchkafka_messages_produced_total", outcome="result") == 2
    assert value(metrics, "torchkafka_messages_produced_total", outcome="dead_letter") == 1
    e2e = "torchkafka_end_to_end_seconds"
    assert value(metrics, f"{e2e}_count", outcome="result") == 2
    assert value(metrics, f"{e2e}_sum", outcome="result") == pytest.approx(3.02)
    assert value(metrics, f"{e2e}_bucket", outcome="result", le="0.025") == 1
    assert value(metrics, f"{e2e}_bucket", outcome="dead_letter", le="0.005") == 1


def test_a_batch_observes_its_size_its_time_and_each_wait(metrics: WorkerMetrics) -> None:
    metrics.batch(3, 0.05, [0.001, 0.002, 0.2])
    metrics.batch(32, 0.2, [0.01] * 32)
    assert value(metrics, "torchkafka_batch_size_count") == 2
    assert value(metrics, "torchkafka_batch_size_bucket", le="4.0") == 1
    assert value(metrics, "torchkafka_batch_size_sum") == 35
    assert value(metrics, "torchkafka_inference_seconds_count") == 2
    assert value(metrics, "torchkafka_inference_seconds_sum") == pytest.approx(0.25)
    assert value(metrics, "torchkafka_queue_wait_seconds_count") == 35
    assert value(metrics, "torchkafka_queue_wait_seconds_bucket", le="0.1") == 34


def test_states_are_gauges_that_go_both_ways(metrics: WorkerMetrics) -> None:
    assert value(metrics, "torchkafka_paused") == 0
    metrics.paused(True)
    metrics.redis_outage(True)
    assert value(metrics, "torchkafka_paused") == 1
    assert value(metrics, "torchkafka_redis_outage") == 1
    metrics.paused(False)
    metrics.redis_outage(False)
    assert value(metrics, "torchkafka_paused") == 0
    assert value(metrics, "torchkafka_redis_outage") == 0


def test_lag_is_per_partition_and_forgotten_on_revoke(metrics: WorkerMetrics) -> None:
    metrics.consumer_lag(("requests", 0), 12)
    metrics.consumer_lag(("requests", 1), 0)
    metrics.consumer_lag(("requests", 0), 7)
    assert value(metrics, "torchkafka_consumer_lag", topic="requests", partition="0") == 7
    metrics.forget_partitions([("requests", 0), ("requests", 5)])  # 5 was never measured
    lag = metrics.registry.get_sample_value(
        "torchkafka_consumer_lag", {"topic": "requests", "partition": "0"}
    )
    assert lag is None
    assert value(metrics, "torchkafka_consumer_lag", topic="requests", partition="1") == 0


def test_every_labelled_series_exists_from_the_start(metrics: WorkerMetrics) -> None:
    for reason in [*Reason, *WorkerReason]:
        assert value(metrics, "torchkafka_dead_letters_total", reason=reason.value) == 0
    for kind in RetryKind:
        assert value(metrics, "torchkafka_retries_total", kind=kind.value) == 0
    for outcome in ("result", "dead_letter"):
        assert value(metrics, "torchkafka_messages_produced_total", outcome=outcome) == 0


def test_each_worker_has_its_own_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()  # the global registry would refuse this
    first.consumed(1)
    assert value(second, "torchkafka_messages_consumed_total") == 0


def test_names_are_unique_prefixed_in_base_units_and_documented(metrics: WorkerMetrics) -> None:
    names = exported_names(metrics)
    assert len(names) == len(set(names)) == 18
    assert not [n for n in names if re.search(r"_(ms|milliseconds|kb|mb)(_|$)", n)]
    section = DOC.read_text().partition("## Metrics and health")[2].partition("\n## ")[0]
    documented = set(re.findall(r"^\| `(torchkafka_[a-z_]+)` \|", section, re.MULTILINE))
    assert documented == set(names)
