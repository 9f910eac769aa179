"""Health probes: liveness follows the loop's heartbeat, readiness the worker's phase."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest

from torchkafka.worker._errors import StartupError
from torchkafka.worker.ops import Health, WorkerMetrics, health_endpoints


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_liveness_needs_a_recent_loop_iteration() -> None:
    clock = Clock()
    health = Health(threading.Event(), liveness_timeout_s=30, clock=clock)
    assert health.liveness() == (False, "starting: no loop iteration yet")
    health.beat()
    clock.now += 30
    assert health.liveness() == (True, "ok")
    clock.now += 1
    assert health.liveness() == (False, "stalled: no loop iteration for 31.0 s")
    health.beat()
    assert health.liveness()[0]


def test_liveness_fails_when_the_inference_thread_finishes_no_batch() -> None:
    clock = Clock()
    health = Health(threading.Event(), liveness_timeout_s=30, clock=clock)
    stalled = {"s": 0.0}
    health.watch_inference(lambda _now: stalled["s"])
    health.beat()  # the loop itself keeps stepping (waiting for room in the queue)
    stalled["s"] = 31.0
    assert health.liveness() == (
        False,
        "stalled: the inference thread finished no batch for 31.0 s",
    )
    stalled["s"] = 0.0
    assert health.liveness() == (True, "ok")


def test_readiness_needs_the_model_and_the_group_and_ends_with_shutdown() -> None:
    stop = threading.Event()
    health = Health(stop)
    assert health.readiness() == (False, "loading the model")
    health.model_loaded()
    assert health.readiness() == (False, "joining the consumer group")
    health.joined()
    assert health.readiness() == (True, "ready")
    health.redis_away(True)
    assert health.readiness() == (False, "paused: redis is away")
    health.redis_away(False)
    assert health.readiness() == (True, "ready")
    stop.set()
    assert health.readiness() == (False, "shutting down")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def test_the_server_answers_each_endpoint_and_stops() -> None:
    health, metrics, port = Health(threading.Event()), WorkerMetrics(), free_port()
    base = f"http://127.0.0.1:{port}"
    with health_endpoints("127.0.0.1", port, health, metrics.registry):
        assert get(f"{base}/healthz")[::2] == (503, "starting: no loop iteration yet\n")
        assert get(f"{base}/readyz")[::2] == (503, "loading the model\n")
        health.beat()
        health.model_loaded()
        health.joined()
        metrics.consumed(3)
        assert get(f"{base}/healthz")[::2] == (200, "ok\n")
        assert get(f"{base}/readyz?verbose")[::2] == (200, "ready\n")
        status, content_type, body = get(f"{base}/metrics")
        assert (status, content_type.split(";")[0]) == (200, "text/plain")
        assert "torchkafka_messages_consumed_total 3.0" in body
        assert "process_cpu_seconds_total" in body
        assert get(f"{base}/other")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=5)  # noqa: S310 - our own server


def test_a_port_in_use_is_a_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoints = health_endpoints(
            "127.0.0.1", port, Health(threading.Event()), WorkerMetrics().registry
        )
        with (
            pytest.raises(StartupError, match=f"cannot serve metrics on 127.0.0.1:{port}"),
            endpoints,
        ):
            pass


def test_port_zero_serves_nothing() -> None:
    with health_endpoints("127.0.0.1", 0, Health(threading.Event()), WorkerMetrics().registry):
        pass
