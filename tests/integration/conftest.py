"""Fixtures shared by the worker's integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import PrivateRedis, RunningWorker, Topics
from torchkafka.worker import WorkerConfig


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    """New topics, already listed by the broker (``ensure_topics`` waits for that)."""
    return Topics(new_topic)


@pytest.fixture
def start_worker() -> Iterator[Callable[[WorkerConfig], RunningWorker]]:
    workers: list[RunningWorker] = []

    def start(config: WorkerConfig) -> RunningWorker:
        worker = RunningWorker(config)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.thread.is_alive():
            worker.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "run")
    server.start()
    yield server
    server.stop(clean=True)
