"""deploy/local scripts: idempotent start/stop, on ports and folders of their own."""

import os
import socket
import subprocess
from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "local"


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (Kafka's broker and controller)."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two adjacent free ports")


def script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def isolated(tmp_path: Path) -> dict[str, str]:
    return {"TORCHKAFKA_RUN_DIR": str(tmp_path / "run")}


def test_redis_script_is_idempotent_and_configures_no_eviction(isolated: dict[str, str]) -> None:
    env = {**isolated, "REDIS_PORT": str(free_port_pair())}
    try:
        first = script("redis.sh", "start", env=env)
        assert first.returncode == 0, first.stderr
        again = script("redis.sh", "start", env=env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert script("redis.sh", "status", env=env).returncode == 0
        client = redis.Redis(port=int(env["REDIS_PORT"]))
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "yes"}  # marks survive restarts
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    finally:
        stopped = script("redis.sh", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert script("redis.sh", "stop", env=env).returncode == 0
    assert script("redis.sh", "status", env=env).returncode != 0


def test_kafka_script_is_idempotent(isolated: dict[str, str]) -> None:
    env = {**isolated, "KAFKA_PORT": str(free_port_pair())}
    try:
        first = script("kafka.sh", "start", "single", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        again = script("kafka.sh", "start", "single", env=env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert script("kafka.sh", "status", "single", env=env).returncode == 0
    finally:
        stopped = script("kafka.sh", "stop", "single", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert script("kafka.sh", "stop", "single", env=env).returncode == 0
    assert script("kafka.sh", "status", "single", env=env).returncode != 0
