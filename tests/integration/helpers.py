"""Helpers shared by the integration tests: topics, worker configs, a worker in a thread,
producing and reading back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
import torch
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from tests.support.ports import free_port as free_port  # re-exported for the tests
from torchkafka.codecs import Request, encode_request
from torchkafka.worker import WorkerConfig
from torchkafka.worker.app import run_worker
from torchkafka.worker.config import build_config

DEPLOY = Path(__file__).parents[2] / "deploy" / "local"


class Topics:
    """A worker's input, output (4 partitions each by default) and dead-letter topics, per test."""

    def __init__(
        self,
        new_topic: Callable[..., str],
        partitions: int = 4,
        output_config: Mapping[str, str] | None = None,
    ) -> None:
        """``output_config``: topic configs of the output topic."""
        self.partitions = partitions
        self.input = new_topic(partitions=partitions)
        self.output = new_topic(partitions=partitions, **(output_config or {}))
        self.dead_letters = new_topic()


MODEL = "python:tests.support.worker_models:poison_sensitive_linear"
IMAGE_MODEL = "python:tests.support.worker_models:channel_means"


def config_for(topics: Topics, bootstrap: str, redis_url: str, **overrides: object) -> WorkerConfig:
    settings: dict[str, object] = {
        "model": MODEL,
        "input_topic": topics.input,
        "output_topic": topics.output,
        "dead_letter_topic": topics.dead_letters,
        "group_id": f"tk-test-{uuid.uuid4().hex[:8]}",
        "bootstrap": bootstrap,
        "redis_url": redis_url,
        "device": "cpu",
        "max_batch_size": 16,
        "max_wait_ms": 20.0,
        "consumer": {"session.timeout.ms": "10000"},
        "metrics_port": 0,  # no fixed port: test workers may run side by side
        **overrides,
    }
    return build_config(settings)


class RunningWorker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            run_worker(self.config, self.stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop within 60 s"
        if self.error is not None:
            raise self.error


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def read(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout_s: float = 60.0,
    isolation: str = "read_committed",
) -> list[Message]:
    """Read ``topic`` from the start until ``expect`` messages (or the timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expect and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(200, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return messages


def request_value(request_id: str, row: torch.Tensor, deadline_ms: int | None = None) -> bytes:
    return encode_request(Request(id=request_id, inputs={"x": row}, deadline_ms=deadline_ms))


def committed_equals_end(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()
    return all(committed[p] == ends[p] or (ends[p] == 0 and committed[p] < 0) for p in ends)


class PrivateRedis:
    """A redis-server of this test only (deploy/local/redis.sh on its own port and folder)."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._env = {**os.environ, "REDIS_PORT": str(self.port), "TORCHKAFKA_RUN_DIR": str(run_dir)}

    def _script(self, *args: str) -> None:
        done = subprocess.run(
            [str(DEPLOY / "redis.sh"), *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"redis.sh {' '.join(args)}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._script("start")

    def stop(self, clean: bool = False) -> None:
        self._script("stop", *(["--clean"] if clean else []))

    def done_ids(self) -> set[str]:
        """The request ids with a done-mark (keys ``...:done:ID``)."""
        client = redis.Redis.from_url(self.url)
        try:
            keys = client.scan_iter(match="*:done:*", count=1000)
            return {key.rsplit(b":done:", 1)[1].decode() for key in keys}
        finally:
            client.close()


def run_cli(
    *args: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``torchkafka ARGS`` in a subprocess; ``env`` adds to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "torchkafka.worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, **(env or {})},
    )


@dataclass(frozen=True)
class SecuredKafka:
    """The local broker's SASL/SCRAM and TLS listeners (deploy/local/kafka.sh, single)."""

    sasl_bootstrap: str
    tls_bootstrap: str
    ca: Path
