"""The client examples of docs/client.md, run against a real broker and worker.

Each example in examples/python is shown whole in docs/client.md (checked in
tests/unit/client/test_examples_doc.py); here each one runs: the blocking and
streaming scripts as their own processes, the HTTP gateway in FastAPI's test
client (which runs its lifespan: the AsyncClient starts and closes).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import RunningWorker, Topics, config_for
from tests.support.worker_models import POISON

EXAMPLES = Path(__file__).parents[2] / "examples" / "python"


@pytest.fixture
def pipeline(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
) -> list[str]:
    """A running worker; the examples' flags that reach it."""
    start_worker(config_for(topics, kafka_bootstrap, redis_url))
    return [
        f"--bootstrap={kafka_bootstrap}",
        f"--input-topic={topics.input}",
        f"--output-topic={topics.output}",
        f"--dead-letter-topic={topics.dead_letters}",
        "--shape=4",
    ]


def run_example(name: str, *flags: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_blocking_example_gets_a_result_for_each_request(pipeline: list[str]) -> None:
    lines = run_example("blocking.py", *pipeline, "--count=3")
    assert len(lines) == 3
    for n, line in enumerate(lines):
        assert line.startswith(f"{n}: "), line
        assert "{'output': [3]} from tests.support.worker_models:poison_sensitive_linear@" in line


def test_the_streaming_example_reads_every_outcome_of_its_requests(pipeline: list[str]) -> None:
    lines = run_example("streaming.py", *pipeline, "--count=20")
    assert lines[-1] == "20 outcomes"
    outcomes = lines[:-1]
    assert len(outcomes) == 20
    assert all(line.endswith(": outputs ['output']") for line in outcomes)
    assert len({line.partition(":")[0] for line in outcomes}) == 20


@pytest.fixture
def gateway(
    kafka_bootstrap: str, topics: Topics, pipeline: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name, value in {
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TORCHKAFKA_INPUT_TOPIC": topics.input,
        "TORCHKAFKA_OUTPUT_TOPIC": topics.output,
        "TORCHKAFKA_DEAD_LETTER_TOPIC": topics.dead_letters,
    }.items():
        monkeypatch.setenv(name, value)
    module = importlib.import_module("http_gateway")
    yield module
    sys.modules.pop("http_gateway", None)
    sys.modules.pop("settings", None)


def test_the_http_gateway_answers_with_results_and_dead_letters(gateway: ModuleType) -> None:
    with TestClient(gateway.app) as http:
        ok = http.post("/infer", json={"values": [1.0, 2.0, 3.0, 4.0], "shape": [4], "id": "h-1"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["id"] == "h-1"
        assert len(ok.json()["outputs"]["output"]) == 3
        poison = http.post("/infer", json={"values": [POISON, 0, 0, 0], "shape": [4]})
        assert poison.status_code == 422
        assert poison.json()["detail"]["reason"] == "model_error"
        misfit = http.post("/infer", json={"values": [1.0, 2.0], "shape": [3]})
        assert misfit.status_code == 400
