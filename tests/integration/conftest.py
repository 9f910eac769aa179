"""Fixtures shared by the worker's integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

# The admin package re-exports these without __all__ listing them (mypy strict).
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from tests.integration.helpers import PrivateRedis, RunningWorker, SecuredKafka, Topics
from tests.integration.streams import PARTITIONS, SLOW_MODEL, TopicReader, WorkerProcess
from torchkafka.worker import DEFAULT_KAFKA_BOOTSTRAP, WorkerConfig


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


@pytest.fixture(scope="session")
def secured_kafka(kafka_bootstrap: str) -> SecuredKafka:
    """The local broker's secured listeners: SASL on KAFKA_PORT+2, TLS on +3."""
    if kafka_bootstrap != DEFAULT_KAFKA_BOOTSTRAP:
        pytest.skip("the SASL and TLS listeners are the local broker's (deploy/local/kafka.sh)")
    port = int(kafka_bootstrap.rpartition(":")[2])
    run_dir = Path(os.environ.get("TORCHKAFKA_RUN_DIR") or Path(__file__).parents[2] / ".run")
    ca = run_dir / "kafka-single" / "tls" / "ca.pem"
    assert ca.is_file(), f"{ca} is missing: restart the local broker (make down up)"
    return SecuredKafka(f"127.0.0.1:{port + 2}", f"127.0.0.1:{port + 3}", ca)


@pytest.fixture
def scram_user(kafka_admin: AdminClient) -> Iterator[tuple[str, str]]:
    """A SCRAM-SHA-512 user with a random password, removed afterwards."""
    name, password = f"tk-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    mechanism = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upsert = UserScramCredentialUpsertion(name, mechanism, password.encode(), None)
    for future in kafka_admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    yield name, password
    deletion = UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)
    for future in kafka_admin.alter_user_scram_credentials([deletion]).values():
        future.result(timeout=30)


@pytest.fixture
def redis_acl_user(redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    """A Redis ACL user with a random password and every command, removed afterwards."""
    name, password = f"tk-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_client.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    yield name, password
    redis_client.acl_deluser(name)


@pytest.fixture
def open_reader(kafka_bootstrap: str) -> Iterator[Callable[..., TopicReader]]:
    readers: list[TopicReader] = []

    def open_(topic: str, partitions: int = PARTITIONS) -> TopicReader:
        readers.append(TopicReader(kafka_bootstrap, topic, partitions))
        return readers[-1]

    yield open_
    for reader in readers:
        reader.close()


@pytest.fixture
def spawn_worker(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, topics: Topics
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts ``torchkafka run`` processes on ``topics``; kills leftovers at teardown."""
    started: list[WorkerProcess] = []

    def spawn(group: str, *extra: str) -> WorkerProcess:
        args = [
            "--model", SLOW_MODEL, "--device", "cpu", "--group-id", group,
            "--input-topic", topics.input, "--output-topic", topics.output,
            "--dead-letter-topic", topics.dead_letters,
            "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
            "--max-batch-size", "8", "--max-wait-ms", "5",
            "--metrics-port", "0", "--dedup-ttl-s", "3600", *extra,
        ]  # fmt: skip
        started.append(WorkerProcess(tmp_path / f"worker-{len(started)}.log", args))
        return started[-1]

    yield spawn
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()
