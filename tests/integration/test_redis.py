"""The Redis fixture gives a real server and a per-test key namespace; clusters are refused."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.integration.helpers import free_port
from torchkafka.worker import StartupError
from torchkafka.worker.pipeline import DedupStore, RetrySettings


def test_redis_answers_and_keys_are_namespaced(redis_client: redis.Redis, key_prefix: str) -> None:
    assert redis_client.ping()
    pipe = redis_client.pipeline()
    pipe.set(key_prefix + "done:a", b"1", ex=60)
    pipe.set(key_prefix + "done:b", b"1", ex=60, nx=True)
    pipe.set(key_prefix + "done:b", b"2", ex=60, nx=True)
    assert pipe.execute() == [True, True, None]
    assert redis_client.get(key_prefix + "done:b") == b"1"
    assert 0 < redis_client.ttl(key_prefix + "done:a") <= 60


def test_a_redis_cluster_node_is_refused_at_start_up(tmp_path: Path) -> None:
    port = free_port()
    # The cluster bus listens on port + 10000 unless told otherwise, which can
    # be past 65535 (or taken) for an ephemeral port: give it its own.
    cluster = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    cluster += ["--cluster-config-file", str(tmp_path / "nodes.conf")]
    log = tmp_path / "redis.log"
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *cluster,
            *("--logfile", str(log)),
        ],
        cwd=tmp_path,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                said = log.read_text()[-2000:] if log.exists() else ""
                assert server.poll() is None, f"redis-server exited: {said}"
                assert time.monotonic() < deadline, "the cluster node did not start"
                time.sleep(0.05)
        store = DedupStore(
            client, "tk-test", done_ttl_s=60, claim_ttl_ms=1000, retry=RetrySettings()
        )
        with pytest.raises(StartupError, match="Redis Cluster is not supported"):
            store.ping()
    finally:
        client.close()
        server.terminate()
        server.wait(10)
