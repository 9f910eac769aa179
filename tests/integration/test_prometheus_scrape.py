"""A real Prometheus scrapes a real worker and finds every documented metric.

Prometheus (the system's binary) runs in a temporary folder on a free port with
the alert rules of deploy/prometheus/alerts.yml and one static target: the
worker's metrics port. The worker serves a few requests, then the test asks
Prometheus's HTTP API for the target's health, the metric names it stored, a
count it scraped and the rules it evaluated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.deploy.test_monitoring import JOB, PROMETHEUS, documented_metrics
from tests.integration.helpers import (
    RunningWorker,
    Topics,
    config_for,
    produce,
    read,
    request_value,
)
from tests.support.ports import free_port, get

REQUESTS = 12


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def api(base: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer."""
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except urllib.error.URLError:
        return False


def prometheus_config(target: str) -> dict[str, Any]:
    """Scrape ``target`` every second as the compose stack's job, with its alert rules."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }


@pytest.fixture
def worker_port(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str]
) -> Iterator[tuple[int, Topics]]:
    """A worker with its metrics on a free port, ready, serving new topics."""
    topics = Topics(new_topic)
    port = free_port()
    config = config_for(
        topics, kafka_bootstrap, redis_url, metrics_port=port, metrics_host="127.0.0.1"
    )
    worker = RunningWorker(config)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), "the worker's readiness", 60)
        yield port, topics
    finally:
        worker.close()


@pytest.fixture
def prometheus(tmp_path: Path, worker_port: tuple[int, Topics]) -> Iterator[str]:
    """The base URL of a Prometheus scraping the worker; stopped afterwards."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: deploy/local/install-system-deps.sh installs it"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(f"127.0.0.1:{worker_port[0]}")))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/-/ready") or process.poll() is not None, "Prometheus")
        assert process.poll() is None, f"Prometheus exited:\n{log.read_text()}"
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def stored_names(base: str) -> set[str]:
    return set(api(base, "label/__name__/values"))


def scraped_value(base: str, expr: str) -> float | None:
    result = api(base, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_every_documented_metric_from_a_worker(
    kafka_bootstrap: str, worker_port: tuple[int, Topics], prometheus: str
) -> None:
    _, topics = worker_port
    rows = {f"p-{i}": torch.randn(4) for i in range(REQUESTS)}
    values = [(rid.encode(), request_value(rid, row)) for rid, row in rows.items()]
    produce(kafka_bootstrap, topics.input, values)
    assert len(read(kafka_bootstrap, topics.output, expect=REQUESTS)) == REQUESTS

    def targets() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = api(prometheus, "targets", state="active")["activeTargets"]
        return active

    wait_for(lambda: [t["health"] for t in targets()] == ["up"], "the worker's target up")
    assert targets()[0]["labels"]["job"] == JOB

    documented = documented_metrics()
    # Prometheus stores histograms as _bucket, _sum and _count series.
    expected = {f"{n}_count" if kind == "histogram" else n for n, kind in documented.items()}
    wait_for(lambda: expected <= stored_names(prometheus), "every documented metric", 20)

    results = 'sum(torchkafka_messages_produced_total{outcome="result"})'
    wait_for(lambda: scraped_value(prometheus, results) == REQUESTS, "the scraped result count")
    assert scraped_value(prometheus, f'up{{job="{JOB}"}}') == 1


def test_prometheus_evaluates_every_alert_rule_on_a_worker_s_metrics(prometheus: str) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = api(prometheus, "rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    assert rules(), "Prometheus loaded no rule from deploy/prometheus/alerts.yml"
    wait_for(lambda: all(rule["health"] == "ok" for rule in rules()), "every rule evaluated")
    firing = [rule["name"] for rule in rules() if rule["state"] == "firing"]
    assert firing == [], "an idle, healthy worker must not fire alerts"
