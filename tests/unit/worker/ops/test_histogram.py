"""BulkHistogram: the same exposition as prometheus_client's Histogram, fed in bulk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from torchkafka.worker.ops._histogram import BulkHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 10)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition's lines without the creation times (they differ by a few µs)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(BUCKETS),  # on a bound: counted in that bound's bucket
            st.floats(min_value=0, max_value=100, allow_nan=False),
        ),
        max_size=50,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_bulk_observations_expose_as_prometheus_client_would(
    values: list[float], chunk: int
) -> None:
    reference, bulk = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("latency_seconds", "How long", ["outcome"], buckets=BUCKETS,
                         registry=reference)  # fmt: skip
    ours = BulkHistogram("latency_seconds", "How long", ["outcome"], buckets=BUCKETS, registry=bulk)
    for value in values:
        expected.labels("result").observe(value)
    for start in range(0, len(values), chunk):
        ours.labels("result").observe_many(values[start : start + chunk])
    expected.labels("dead_letter")
    ours.labels("dead_letter")
    assert exposition(bulk) == exposition(reference)


def test_each_series_has_its_creation_time() -> None:
    registry = CollectorRegistry()
    histogram = BulkHistogram("wait_seconds", "Waits", buckets=BUCKETS, registry=registry)
    histogram.labels().observe_many([0.5])
    assert registry.get_sample_value("wait_seconds_created") == pytest.approx(
        histogram.labels().created
    )
    assert registry.get_sample_value("wait_seconds_count") == 1


def test_wrong_label_count_is_refused() -> None:
    histogram = BulkHistogram("wait_seconds", "Waits", ["outcome"], buckets=BUCKETS)
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels()
