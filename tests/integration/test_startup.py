"""Start-up failures end in bounded time, with one clear line and the start-up exit code.

SASL or TLS against the plaintext listener, a broker address nobody listens
on, and a Redis nobody listens on: once the model is loaded, the worker waits
``startup_timeout_s`` at most, then exits 2 with one error line that names the
cause as librdkafka or redis-py tells it (no flood of client errors, no
traceback).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from tests.integration.helpers import MODEL, Topics, free_port, run_cli

#: The bound the tests set, and how much later than it the worker may exit.
STARTUP_TIMEOUT_S = 3.0
SLACK_S = 2.5


def start_up(topics: Topics, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run a worker that should fail at start-up; its log events, after checking its exit code."""
    done = run_cli(
        "--log-format", "json", "run", "--model", MODEL, "--device", "cpu",
        "--input-topic", topics.input, "--output-topic", topics.output,
        "--dead-letter-topic", topics.dead_letters, "--metrics-port", "0",
        "--startup-timeout-s", str(STARTUP_TIMEOUT_S), *args,
        env=env, timeout_s=90,
    )  # fmt: skip
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    return events


def assert_one_clear_line(events: list[dict[str, Any]], cause: str, within_s: float) -> None:
    """The last event says why it cannot start; nothing else warns; it came soon after loading."""
    last = events[-1]
    assert last["event"] == "cannot start", events[-5:]
    assert cause in last["error"], last
    loud = [e for e in events[:-1] if e["level"] in ("warning", "error", "critical")]
    assert not loud, loud[:5]
    assert len(events) < 10, [e["event"] for e in events]
    loaded = next(e for e in events if e["event"] == "model loaded")
    waited = timestamp(last) - timestamp(loaded)
    assert waited < within_s, f"exited {waited:.1f} s after loading the model"


def timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@pytest.mark.parametrize(
    ("protocol", "cause", "within_s"),
    [
        # The broker refuses the SASL handshake: no need to wait for the bound.
        ("sasl_plaintext", "SASL SCRAM-SHA-512 mechanism handshake failed", SLACK_S),
        ("ssl", "SSL handshake failed", STARTUP_TIMEOUT_S + SLACK_S),
    ],
)
def test_sasl_or_tls_against_the_plaintext_listener_ends_start_up_with_its_cause(
    kafka_bootstrap: str, topics: Topics, protocol: str, cause: str, within_s: float
) -> None:
    events = start_up(
        topics,
        "--bootstrap", kafka_bootstrap, "--security-protocol", protocol,
        "--sasl-username", "someone",
        env={"TORCHKAFKA_SASL_PASSWORD": "secret"},
    )  # fmt: skip
    assert_one_clear_line(events, cause, within_s)
    assert "secret" not in json.dumps(events)


def test_a_broker_nobody_listens_on_ends_start_up_after_the_bound(topics: Topics) -> None:
    events = start_up(topics, "--bootstrap", f"127.0.0.1:{free_port()}")
    assert_one_clear_line(events, "Connection refused", STARTUP_TIMEOUT_S + SLACK_S)
    assert "does not answer within 3 s" in events[-1]["error"]


def test_a_redis_nobody_listens_on_ends_start_up_after_the_bound(
    kafka_bootstrap: str, topics: Topics
) -> None:
    port = free_port()
    events = start_up(
        topics, "--bootstrap", kafka_bootstrap, "--redis-url", f"redis://127.0.0.1:{port}/0"
    )
    assert_one_clear_line(events, "Connection refused", STARTUP_TIMEOUT_S + SLACK_S)
    assert f"127.0.0.1:{port}" in events[-1]["error"]


def test_a_worker_of_run_workers_that_cannot_start_makes_the_supervisor_exit_2(
    kafka_bootstrap: str, topics: Topics
) -> None:
    port = free_port()
    events = start_up(  # checks the exit code
        topics,
        "--workers", "2",
        "--bootstrap", kafka_bootstrap, "--redis-url", f"redis://127.0.0.1:{port}/0",
    )  # fmt: skip
    assert any(e["event"] == "cannot start" for e in events), events[-5:]
