"""A record that kills every worker process that runs it: the third one quarantines it.

Real ``torchkafka run`` processes, one after another, on one consumer group;
the model exits the process (``os._exit``) when it meets the poison record.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from tests.integration.helpers import Topics, produce, request_value
from tests.integration.streams import (
    PARTITIONS,
    TopicReader,
    WorkerProcess,
    requests,
    wait_until,
)
from tests.support.worker_models import POISON

CRASHING_MODEL = "python:tests.support.worker_models:crashes_on_poison"


def test_a_record_that_kills_its_workers_is_quarantined_and_the_rest_answered(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topics: Topics
) -> None:
    stream = requests("req", 40)
    stream.insert(20, (b"poison", request_value("poison", torch.full((4,), POISON))))
    produce(kafka_bootstrap, topics.input, stream)
    args = [
        "--model", CRASHING_MODEL, "--device", "cpu",
        "--group-id", f"tk-test-{uuid.uuid4().hex[:8]}",
        "--input-topic", topics.input, "--output-topic", topics.output,
        "--dead-letter-topic", topics.dead_letters,
        "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
        "--max-batch-size", "8", "--max-wait-ms", "5", "--metrics-port", "0",
        # a dead worker's partitions and claims are taken over within seconds
        "--consumer-config", "session.timeout.ms=6000", "--claim-ttl-ms", "3000",
        "--quarantine-after-crashes", "2",
    ]  # fmt: skip

    results = TopicReader(kafka_bootstrap, topics.output, PARTITIONS)
    dead_letters = TopicReader(kafka_bootstrap, topics.dead_letters, 1)
    workers: list[WorkerProcess] = []
    try:
        for lifetime in (1, 2):  # the poison runs in a batch, then alone: each time a death
            workers.append(WorkerProcess(tmp_path / f"worker-{lifetime}.log", args))
            assert workers[-1].process.wait(120) == 1, workers[-1].log_tail()
        third = WorkerProcess(tmp_path / "worker-3.log", args)
        workers.append(third)
        wanted = {key.decode() for key, _ in stream} - {"poison"}

        def answered() -> bool:
            third.assert_running()  # unguarded, it would die of the poison too
            results.poll()
            dead_letters.poll()
            return set(results.ids()) >= wanted and len(dead_letters.messages) >= 1

        wait_until(
            answered,
            120,
            "every other request's result and the poison's dead letter",
            third.log_tail,
        )
        assert third.terminate_and_wait(60) == 0, third.log_tail()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill()
        results.close()
        dead_letters.close()

    assert "poison" not in results.ids()
    [dead] = dead_letters.messages
    assert dead.key() == b"poison"
    headers = dict(dead.headers() or [])
    assert headers["torchkafka.reason"] == b"quarantined"
    error = headers["torchkafka.error"]
    assert isinstance(error, bytes)
    assert error.startswith(b"2 worker processes died while it ran")
