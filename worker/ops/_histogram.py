"""A histogram fed a batch of observations per call, exported as a Prometheus histogram.

prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets
for each value; the worker observes three latencies per record, and at tens
of thousands of records a second that was a visible share of a core. This
one finds each value's bucket with ``bisect`` and takes its lock once per
call. Its exposition is prometheus_client's (``_bucket`` with cumulative
``le`` counts, ``_count``, ``_sum``, ``_created``).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: A bucket bound as prometheus_client writes ``le`` (``+Inf``, ``0.25``, ``1.0``).
_bound_text: Callable[[float], str] = floatToGoString


class HistogramSeries:
    """One label set's counts: a count per bucket (``+Inf`` last), the sum, when created."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        self.created = time.time()

    def observe_many(self, values: Iterable[float]) -> None:
        """Count each of ``values`` (one lock for all of them)."""
        bounds = self._bounds
        found = [(bisect_left(bounds, value), value) for value in values]
        with self._lock:
            counts = self._counts
            for index, value in found:
                counts[index] += 1
                self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """The cumulative counts per bucket (``+Inf`` last) and the sum, read together."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running, cumulative = 0, []
        for count in counts:
            running += count
            cumulative.append(running)
        return cumulative, total


class BulkHistogram(Collector):
    """A histogram, optionally labelled, whose series count many values per call."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._labels = tuple(labelnames)
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramSeries:
        """The series of one label set (created on first use)."""
        if len(values) != len(self._labels):
            raise ValueError(f"{self._name} takes labels {self._labels}, got {values}")
        series = self._series.get(values)
        if series is None:
            with self._lock:
                series = self._series.setdefault(values, HistogramSeries(self._bounds))
        return series

    def observe_many(self, values: Iterable[float]) -> None:
        """Count ``values`` in the unlabelled series."""
        self.labels().observe_many(values)

    def describe(self) -> Iterable[Metric]:
        """The metric's name and type, without samples (for the registry's name checks)."""
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> Iterator[Metric]:
        """The buckets, count, sum and creation time of every series."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        edges = [_bound_text(bound) for bound in (*self._bounds, float("inf"))]
        for values, series in list(self._series.items()):
            cumulative, total = series.snapshot()
            family.add_metric(list(values), list(zip(edges, cumulative, strict=True)), total)
            labels = dict(zip(self._labels, values, strict=True))
            family.add_sample(f"{self._name}_created", labels, series.created)
        yield family
