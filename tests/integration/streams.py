"""Request streams, topic readers, readiness and worker processes for the integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.helpers import request_value
from tests.support.ports import get
from torchkafka.codecs import decode_result

ROOT = Path(__file__).parents[2]
#: Partitions of the input and output topics of ``helpers.Topics``.
PARTITIONS = 4
#: After the expected results are in, how long to keep reading for an extra one.
SETTLE_S = 2.0
#: A bound on a paced stream, which a test ends long before (at 100/s: 5 minutes).
MAX_PACED = 30_000
#: The model of the worker processes: the poison-free linear layer, 20 ms a batch.
SLOW_MODEL = "python:tests.support.worker_models:slow_linear"


def request(prefix: str, n: int) -> tuple[bytes, bytes]:
    """The (key, value) of request PREFIX-n."""
    return f"{prefix}-{n}".encode(), request_value(f"{prefix}-{n}", torch.full((4,), float(n)))


def requests(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (key, value) requests with ids PREFIX-0, PREFIX-1, ..."""
    return [request(prefix, n) for n in range(count)]


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    details: Callable[[], str] = str,
) -> None:
    """Poll ``condition`` every 0.2 s; fail with ``what`` and ``details()`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{details()}")
        time.sleep(0.2)


class TopicReader:
    """Reads a whole topic from its beginning, without joining a group, and keeps it."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",  # never joined or committed
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.messages: list[Message] = []

    def poll(self, duration_s: float = 0.2) -> list[Message]:
        """Read what arrives within ``duration_s``; everything read so far."""
        deadline = time.monotonic() + duration_s
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            self.messages += [
                m for m in self._consumer.consume(500, timeout=timeout) if m.error() is None
            ]
            if timeout == 0.0:
                return self.messages

    def wait_for(
        self, count: int, timeout_s: float, details: Callable[[], str] = str
    ) -> list[Message]:
        """Read until ``count`` messages (failing after ``timeout_s``), then SETTLE_S more."""
        wait_until(
            lambda: len(self.poll()) >= count,
            timeout_s,
            f"{count} messages",
            lambda: f"{len(self.messages)} read\n{details()}",
        )
        return self.poll(SETTLE_S)

    def ids(self) -> Counter[str]:
        """How many results were read per request id."""
        return Counter(decode_result(m.value() or b"").id for m in self.messages)

    def workers(self) -> set[str]:
        """The workers the results read so far came from (``poll`` reads more)."""
        return {decode_result(m.value() or b"").worker for m in self.messages}

    def close(self) -> None:
        self._consumer.close()


def readiness(port: int) -> tuple[int, str]:
    """/readyz's status and text; 0 while nothing listens on ``port`` yet."""
    try:
        status, _, text = get(f"http://127.0.0.1:{port}/readyz")
    except urllib.error.URLError:
        return 0, "not listening"
    return status, text


class WorkerProcess:
    """``torchkafka run`` as a child process (its own session), JSON logs to a file."""

    def __init__(self, log_path: Path, args: list[str]) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "torchkafka.worker.cli", "--log-format", "json", "run"]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                [*command, *args],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path},  # the models of tests/integration
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # teardown can kill its whole process group
            )

    def terminate_and_wait(self, timeout_s: float) -> int:
        """SIGTERM, then its exit code (failing if it takes longer than ``timeout_s``)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {timeout_s} s of SIGTERM\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_running(self) -> None:
        assert self.alive(), f"worker exited early\n{self.log_tail()}"

    def wait_for_event(self, name: str, timeout_s: float) -> None:
        """Until the log has the event ``name``; fails if the worker exits first or later."""
        deadline = time.monotonic() + timeout_s
        while not self.events(name):
            self.assert_running()
            assert time.monotonic() < deadline, f"no {name!r} in {timeout_s} s\n{self.log_tail()}"
            time.sleep(0.1)

    def peak_rss_mib(self) -> float:
        """The process's peak resident set (VmHWM) so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        (line,) = (line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log events called ``name``."""
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    @property
    def worker_id(self) -> str:
        """Its name in results (``worker_id()`` of the child process)."""
        return f"{socket.gethostname()}/{self.process.pid}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL its process group (it and any workers it started), if still there."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def assert_no_id_answered_twice(
    results: TopicReader, what: str = "ids got a second result"
) -> None:
    """Every id on the result topic at most once."""
    twice = sorted(i for i, n in results.ids().items() if n > 1)
    assert not twice, f"{len(twice)} {what}: {twice[:5]}"


def assignments(admin: AdminClient, group: str, topic: str) -> list[set[int]]:
    """The partitions of ``topic`` each member of ``group`` holds; [] if it is not stable."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if description.state.name != "STABLE":
        return []
    return [
        {tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}
        for member in description.members
    ]


class PacedProducer:
    """Produces requests PREFIX-0, PREFIX-1, ... at ``rate`` per second, on a thread."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, rate: float) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._topic, self._prefix, self._rate = topic, prefix, rate
        self._finish = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while self.sent < MAX_PACED and not self._finish.is_set():
            key, value = request(self._prefix, self.sent)
            self._producer.produce(self._topic, key=key, value=value)
            self._producer.poll(0)
            self.sent += 1
            self._finish.wait(max(0.0, started + self.sent / self._rate - time.monotonic()))

    def finish(self) -> Counter[str]:
        """Stop producing; the ids sent, each once."""
        self._finish.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0
        assert self.sent < MAX_PACED, "the stream ended before the test finished with it"
        return Counter(f"{self._prefix}-{n}" for n in range(self.sent))
