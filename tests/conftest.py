"""Session fixtures: a real Kafka broker and Redis, reused if running, else started.

KAFKA_BOOTSTRAP and REDIS_URL point the suite at other services; those must
already answer (the suite starts only the local ones, at the default
addresses, with deploy/local/*.sh, and stops what it started).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from torchkafka.topology import TopicSpec, admin_client, delete_topics, ensure_topics
from torchkafka.worker._env import (
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_REDIS_URL,
)
from torchkafka.worker._env import (
    kafka_bootstrap as configured_kafka,
)
from torchkafka.worker._env import (
    redis_url as configured_redis,
)

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy" / "local"
INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def kafka_answers(bootstrap: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=3)
    except KafkaException:
        return False
    return True


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.ConnectionError:
        return False


def run_script(*args: str) -> None:
    subprocess.run([str(DEPLOY / args[0]), *args[1:]], check=True, timeout=300)


def local_service(
    address: str,
    default: str,
    answers: Callable[[str], bool],
    variable: str,
    start: list[tuple[str, ...]],
    stop: tuple[str, ...],
) -> Iterator[str]:
    """Reuse the service at ``address``, or start the local one there and stop it after."""
    if answers(address):
        yield address
        return
    if address != default:
        pytest.fail(f"{variable}={address} does not answer; start it or unset the variable")
    for command in start:
        run_script(*command)
    yield address
    run_script(*stop)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The broker's address; started with deploy/local/kafka.sh if absent."""
    yield from local_service(
        configured_kafka(),
        DEFAULT_KAFKA_BOOTSTRAP,
        kafka_answers,
        "KAFKA_BOOTSTRAP",
        start=[("kafka.sh", "fetch"), ("kafka.sh", "start", "single")],
        stop=("kafka.sh", "stop", "single"),
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Redis's URL; started with deploy/local/redis.sh if absent."""
    yield from local_service(
        configured_redis(),
        DEFAULT_REDIS_URL,
        redis_answers,
        "REDIS_URL",
        start=[("redis.sh", "start")],
        stop=("redis.sh", "stop"),
    )


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return admin_client(kafka_bootstrap)


@pytest.fixture
def new_topic(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Creates topics unique to this test; deletes them afterwards."""
    created: list[str] = []

    def create(partitions: int = 1, **config: str) -> str:
        name = f"tk-test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
        ensure_topics(kafka_admin, [TopicSpec(name, partitions=partitions, config=config)])
        created.append(name)
        return name

    yield create
    delete_topics(kafka_admin, created)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"tk-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)
