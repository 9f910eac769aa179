"""Health probes: liveness follows the loop's heartbeat, readiness the worker's phase."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.support.ports import free_port, get
from torchkafka.worker._errors import StartupError
from torchkafka.worker.ops import Health, WorkerMetrics, _health, health_endpoints
from torchkafka.worker.ops._health import PORT_SEARCH, PROBE_INTERVAL_S


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


def test_readiness_follows_a_watched_dependency_checked_at_most_every_interval() -> None:
    clock = Clock()
    health = Health(threading.Event(), clock=clock)
    answer: list[str | None] = ["redis is unusable: connection refused"]
    checked: list[float] = []

    def problem() -> str | None:
        checked.append(clock.now)
        return answer[0]

    health.watch(problem)
    health.model_loaded()
    assert health.readiness() == (False, "joining the consumer group")
    assert not checked  # the cheap reasons first: no check before the group is joined
    health.joined()
    assert health.readiness() == (False, "redis is unusable: connection refused")
    answer[0] = None
    clock.now += PROBE_INTERVAL_S - 0.1
    assert health.readiness()[0] is False  # the last answer, until it is stale
    clock.now += 0.1
    assert health.readiness() == (True, "ready")
    assert health.readiness() == (True, "ready")
    assert checked == [100.0, 100.0 + PROBE_INTERVAL_S]


def test_a_watched_problem_names_the_cause_of_a_pause() -> None:
    health = Health(threading.Event())
    health.model_loaded()
    health.joined()
    lost: list[str | None] = ["paused: redis lost its done-marks"]
    health.watch(lambda: lost[0])
    health.redis_away(True)  # the loop paused, holding its work
    assert health.readiness() == (False, "paused: redis lost its done-marks")


def test_concurrent_readiness_requests_share_one_check() -> None:
    health = Health(threading.Event())
    health.model_loaded()
    health.joined()
    started, release = threading.Event(), threading.Event()
    checks: list[int] = []

    def slow_problem() -> str | None:
        checks.append(1)
        started.set()
        release.wait(5)
        return "redis is unusable: timed out"

    health.watch(slow_problem)
    answers: list[tuple[bool, str]] = []
    requests = [
        threading.Thread(target=lambda: answers.append(health.readiness())) for _ in range(3)
    ]
    for request in requests:
        request.start()
    assert started.wait(5)
    time.sleep(0.2)  # the other requests reach the probe while the check runs
    release.set()
    for request in requests:
        request.join(5)
    assert checks == [1]
    assert answers == [(False, "redis is unusable: timed out")] * 3


def test_the_server_answers_each_endpoint_and_stops() -> None:
    health, metrics, port = Health(threading.Event()), WorkerMetrics(), free_port()
    base = f"http://127.0.0.1:{port}"
    with health_endpoints("127.0.0.1", port, health, metrics.registry) as bound:
        assert bound == port
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


def test_a_port_in_use_moves_the_server_to_the_next_free_one() -> None:
    health = Health(threading.Event())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with health_endpoints("127.0.0.1", port, health, WorkerMetrics().registry) as bound:
            assert port < bound < port + PORT_SEARCH
            assert get(f"http://127.0.0.1:{bound}/healthz")[0] == 503  # ours: no loop yet


def test_no_free_port_in_the_search_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_health, "PORT_SEARCH", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoints = health_endpoints(
            "127.0.0.1", port, Health(threading.Event()), WorkerMetrics().registry
        )
        with (
            pytest.raises(StartupError, match=f"ports {port} to {port} are all in use"),
            endpoints,
        ):
            pass


def test_an_address_not_of_this_host_is_a_startup_error() -> None:
    endpoints = health_endpoints(
        "192.0.2.1", free_port(), Health(threading.Event()), WorkerMetrics().registry
    )  # TEST-NET-1: never a local address
    with pytest.raises(StartupError, match=r"cannot serve metrics on 192\.0\.2\.1:"), endpoints:
        pass


def test_port_zero_serves_nothing() -> None:
    health, registry = Health(threading.Event()), WorkerMetrics().registry
    with health_endpoints("127.0.0.1", 0, health, registry) as bound:
        assert bound == 0
