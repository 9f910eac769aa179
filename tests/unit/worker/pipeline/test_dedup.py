"""DedupStore without a server: error classification, retries, then TransientError."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from torchkafka.worker._errors import TransientError
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import DedupStore, RetrySettings
from torchkafka.worker.pipeline._breaker import CircuitBreaker
from torchkafka.worker.pipeline._dedup import is_transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (rx.ConnectionError("refused"), True),
        (rx.TimeoutError("timed out"), True),
        (rx.BusyLoadingError("LOADING"), True),
        (rx.MaxConnectionsError("pool exhausted"), True),
        (rx.ReadOnlyError("READONLY"), True),
        (rx.OutOfMemoryError("OOM"), True),
        (rx.TryAgainError("TRYAGAIN"), True),
        (rx.ClusterDownError("CLUSTERDOWN"), True),
        (rx.MasterDownError("MASTERDOWN"), True),
        (rx.AuthenticationError("WRONGPASS"), False),
        (rx.AuthorizationError("denied"), False),
        (rx.NoPermissionError("NOPERM"), False),
        (rx.ResponseError("WRONGTYPE"), False),
        (rx.NoScriptError("NOSCRIPT"), False),
        (rx.DataError("bad value"), False),
        (ValueError("not redis"), False),
    ],
)
def test_classification(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


@pytest.fixture
def unreachable_client() -> Iterator[redis.Redis]:
    """A client for a port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        client = redis.Redis(
            host="127.0.0.1",
            port=sock.getsockname()[1],
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        yield client
        client.close()


CALLS: dict[str, Callable[[DedupStore], object]] = {
    "claim": lambda store: store.claim(["a"], "w1", 1),
    "mark_done": lambda store: store.mark_done(["a"], "w1", 1),
    "release": lambda store: store.release(["a"], "w1"),
    "ping": lambda store: store.ping(),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_unreachable_redis_is_retried_then_transient(
    unreachable_client: redis.Redis, operation: str
) -> None:
    retry = RetrySettings(max_attempts=3, initial_s=0.001, max_s=0.002, max_total_s=2.0)
    store = DedupStore(unreachable_client, "ns", 60, 1_000, retry)
    with capture_logs() as logs, pytest.raises(TransientError, match=operation) as raised:
        CALLS[operation](store)
    assert isinstance(raised.value.__cause__, rx.ConnectionError)
    assert [(log["event"], log["attempt"]) for log in logs] == [
        ("redis retry", 1),
        ("redis retry", 2),
    ]
    assert all("ConnectionError" in log["error"] for log in logs)


def test_metrics_count_each_retry_and_show_the_outage(unreachable_client: redis.Redis) -> None:
    metrics = WorkerMetrics()
    retry = RetrySettings(max_attempts=3, initial_s=0.001, max_s=0.002, max_total_s=2.0)
    store = DedupStore(unreachable_client, "ns", 60, 1_000, retry, metrics)
    with pytest.raises(TransientError):
        store.ping()
    assert metrics.registry.get_sample_value("torchkafka_retries_total", {"kind": "redis"}) == 2
    assert metrics.registry.get_sample_value("torchkafka_redis_outage") == 1


@pytest.mark.parametrize(
    "args",
    [("", 60, 1_000), ("ns", 0, 1_000), ("ns", 60, 0)],
)
def test_constructor_checks(unreachable_client: redis.Redis, args: tuple[str, int, int]) -> None:
    with pytest.raises(ValueError, match="DedupStore"):
        DedupStore(unreachable_client, *args, RetrySettings())


def test_after_an_outage_calls_fail_fast_until_one_probe_is_due(
    unreachable_client: redis.Redis,
) -> None:
    now = [0.0]
    metrics = WorkerMetrics()
    retry = RetrySettings(max_attempts=3, initial_s=0.001, max_s=0.002, max_total_s=2.0)
    breaker = CircuitBreaker(open_s=5.0, clock=lambda: now[0])
    store = DedupStore(unreachable_client, "ns", 60, 1_000, retry, metrics, breaker)

    def retries() -> float | None:
        return metrics.registry.get_sample_value("torchkafka_retries_total", {"kind": "redis"})

    with pytest.raises(TransientError, match="claim failed"):
        store.claim(["a"], "w1", 1)  # pays its retries
    assert retries() == 2
    for _ in range(100):  # a busy loop of polls during the outage pays nothing
        with pytest.raises(TransientError, match="claim not tried"):
            store.claim(["a"], "w1", 1)
    assert retries() == 2
    now[0] += 5.0
    with pytest.raises(TransientError, match="claim failed") as probed:
        store.claim(["a"], "w1", 1)  # one probe, no retries, and open again
    assert isinstance(probed.value.__cause__, rx.ConnectionError)
    assert retries() == 2
    assert breaker.open
    assert metrics.registry.get_sample_value("torchkafka_redis_outage") == 1
