"""A worker and the tools through the local broker's SASL/SCRAM and TLS listeners, Redis with ACLs.

Every client (the worker's consumer, producer and admin client, and the
``topics``, ``produce`` and ``consume`` commands) takes the one connection
section; secrets come from the environment or a file and never show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient
from structlog.testing import capture_logs

from tests.integration.helpers import (
    MODEL,
    RunningWorker,
    SecuredKafka,
    free_port,
    run_cli,
)
from torchkafka.topology import delete_topics
from torchkafka.worker import StartupError, WorkerConfig
from torchkafka.worker.app import run_worker
from torchkafka.worker.config import build_config
from torchkafka.worker.pipeline import DedupStore, RetrySettings

COUNT = 12


@pytest.fixture
def topic_names(kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    """Names for an input, output and dead-letter topic, created by the test; deleted after."""
    run = uuid.uuid4().hex[:8]
    names = {kind: f"tk-test-secured-{run}-{kind}" for kind in ("in", "out", "dlq")}
    yield names
    delete_topics(kafka_admin, list(names.values()))


def create_topics(names: dict[str, str], connection: list[str], env: dict[str, str]) -> str:
    created = run_cli(
        "topics", "create", "--input-topic", names["in"], "--output-topic", names["out"],
        "--dead-letter-topic", names["dlq"], "--partitions", "2", *connection, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    return created.stdout + created.stderr


def produce_and_consume(
    names: dict[str, str], connection: list[str], env: dict[str, str]
) -> tuple[list[str], str]:
    """Send COUNT requests and read their results, both through ``connection``."""
    prefix = uuid.uuid4().hex[:8]
    produced = run_cli(
        "produce", "--topic", names["in"], "--count", str(COUNT), "--shape", "4",
        "--dtype", "float32", "--id-prefix", prefix, *connection, env=env,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    consumed = run_cli(
        "consume", "--topic", names["out"], "--count", str(COUNT), "--from-beginning",
        "--format", "json", "--timeout", "90", *connection, env=env, timeout_s=180,
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr
    ids = [json.loads(line)["id"] for line in consumed.stdout.splitlines() if line.startswith("{")]
    assert sorted(ids) == sorted(f"{prefix}-{n}" for n in range(COUNT))
    return ids, produced.stdout + produced.stderr + consumed.stdout + consumed.stderr


def test_a_worker_and_the_tools_work_through_sasl_scram_with_redis_acl_and_no_secret_shows(
    secured_kafka: SecuredKafka,
    scram_user: tuple[str, str],
    redis_acl_user: tuple[str, str],
    redis_url: str,
    redis_client: redis.Redis,
    topic_names: dict[str, str],
    tmp_path: Path,
) -> None:
    user, password = scram_user
    redis_user, redis_password = redis_acl_user
    sasl = [
        "--bootstrap", secured_kafka.sasl_bootstrap, "--security-protocol", "sasl_plaintext",
        "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user,
    ]  # fmt: skip
    env = {"TORCHKAFKA_SASL_PASSWORD": password}
    shown = create_topics(topic_names, sasl, env)
    redis_password_file = tmp_path / "redis-password"
    redis_password_file.write_text(redis_password + "\n")
    port, log_path = free_port(), tmp_path / "worker.log"
    run = [
        sys.executable, "-m", "torchkafka.worker.cli", "--log-format", "json", "run",
        "--model", MODEL, "--device", "cpu", "--group-id", f"tk-{topic_names['in']}",
        "--input-topic", topic_names["in"], "--output-topic", topic_names["out"],
        "--dead-letter-topic", topic_names["dlq"], *sasl,
        "--redis-url", redis_url.replace("redis://", f"redis://{redis_user}@"),
        "--redis-password-file", str(redis_password_file),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
    ]  # fmt: skip
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            run,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            ids, tools_output = produce_and_consume(topic_names, sasl, env)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                metrics = reply.read().decode()
        finally:
            worker.terminate()
            worker.wait(60)
    log = log_path.read_text()
    assert worker.returncode == 0, log[-3000:]
    marks = redis_client.scan_iter(match=f"torchkafka:{topic_names['out']}:done:*", count=1000)
    done = {key.decode().rpartition(":done:")[2] for key in marks}
    assert done == set(ids)  # the done-marks went through the ACL user
    for text in (log, metrics, tools_output, shown):
        assert password not in text
        assert redis_password not in text
    assert all(json.loads(line) for line in log.splitlines() if line.strip())  # JSON only


def test_a_worker_and_the_tools_work_through_tls(
    secured_kafka: SecuredKafka,
    redis_url: str,
    topic_names: dict[str, str],
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    tls = [
        "--bootstrap", secured_kafka.tls_bootstrap, "--security-protocol", "ssl",
        "--ssl-ca-location", str(secured_kafka.ca),
    ]  # fmt: skip
    create_topics(topic_names, tls, {})
    config = build_config(
        {
            "model": MODEL,
            "device": "cpu",
            "input_topic": topic_names["in"],
            "output_topic": topic_names["out"],
            "dead_letter_topic": topic_names["dlq"],
            "group_id": f"tk-{topic_names['in']}",
            "bootstrap": secured_kafka.tls_bootstrap,
            "security_protocol": "ssl",
            "ssl_ca_location": str(secured_kafka.ca),
            "redis_url": redis_url,
            "metrics_port": 0,
        }
    )
    worker = start_worker(config)
    produce_and_consume(topic_names, tls, {})
    worker.close()


def test_a_wrong_sasl_password_stops_the_worker_at_start_up_and_says_why(
    secured_kafka: SecuredKafka, scram_user: tuple[str, str], redis_url: str
) -> None:
    user, _password = scram_user
    config = build_config(
        {
            "model": MODEL,
            "device": "cpu",
            "input_topic": "in",
            "output_topic": "out",
            "dead_letter_topic": "dlq",
            "bootstrap": secured_kafka.sasl_bootstrap,
            "security_protocol": "sasl_plaintext",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": "not-the-password",
            "redis_url": redis_url,
            "metrics_port": 0,
        }
    )
    with capture_logs() as logs, pytest.raises(StartupError, match="refused the worker") as error:
        run_worker(config, threading.Event())
    assert "Authentication failed" in str(error.value)
    assert "not-the-password" not in str(error.value)
    # One line, not one per reconnection: what the client said is in the error.
    assert not [e for e in logs if e["event"] == "kafka client error"], logs
    assert all("not-the-password" not in str(e) for e in logs)


def test_a_wrong_redis_password_is_a_startup_error(
    redis_acl_user: tuple[str, str], redis_url: str
) -> None:
    user, _password = redis_acl_user
    wrong = "not-the-password"
    client = redis.Redis.from_url(redis_url, username=user, password=wrong)
    store = DedupStore(client, "tk", done_ttl_s=60, claim_ttl_ms=1000, retry=RetrySettings())
    with pytest.raises(
        StartupError, match="redis refused the worker: invalid username-password pair"
    ):
        store.ping()
    client.close()
