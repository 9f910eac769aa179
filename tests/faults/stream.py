"""The request stream and what comes back: a paced producer that counts delivery reports
per id, and readers of the output and dead-letter topics."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from tests.integration.helpers import request_value
from torchkafka.codecs import decode_result

#: A row of the test model's input that is never its poison value (666).
MAX_VALUE = 100


def request_id(prefix: str, n: int) -> str:
    return f"{prefix}-{n}"


class Stream:
    """Produces requests PREFIX-0, PREFIX-1, ... at ``rate`` per second, on a thread.

    It ends after ``count`` requests, or later if a ``held`` block still runs
    then: a fault always happens mid-stream, however slow the machine.
    ``partitions(n)`` lists the partitions request n goes to (each gets a
    copy); None: one copy, partitioned by its key. The producer is idempotent
    with ``acks=all``; each id counts as acknowledged once a copy's delivery
    report says so, and as indeterminate if none does (failed or never
    reported: it may or may not be in the topic).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        count: int,
        rate: float,
        prefix: str = "req",
        partitions: Callable[[int], list[int]] | None = None,
    ) -> None:
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        self._topic, self._prefix, self._rate = topic, prefix, rate
        self._partitions = partitions
        self.count = count
        self.sent = 0  # requests handed to the producer
        self._holds = 0
        self.acked: set[str] = set()
        self.failed: Counter[str] = Counter()
        self.idle_at: float | None = None  # monotonic: every delivery report is in
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the stream going (past ``count`` if need be) while the block runs."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    def _run(self) -> None:
        started = time.monotonic()
        while self.sent < self.count or self._holds:
            self.produce(self.sent)
            self.sent += 1
            self._producer.poll(0)
            time.sleep(max(0.0, started + self.sent / self._rate - time.monotonic()))
        self._producer.flush(120)
        self.idle_at = time.monotonic()

    @property
    def ids(self) -> list[str]:
        """The ids sent so far."""
        return [request_id(self._prefix, n) for n in range(self.sent)]

    def produce(self, n: int) -> None:
        """Hand request n (each of its copies) to the producer."""
        id_ = request_id(self._prefix, n)
        value = request_value(id_, torch.full((4,), float(n % MAX_VALUE)))
        report = partial(self._report, id_)
        for partition in self._partitions(n) if self._partitions else [-1]:  # -1: by key
            self._producer.produce(
                self._topic, key=id_.encode(), value=value, partition=partition, on_delivery=report
            )

    def _report(self, id_: str, error: KafkaError | None, _message: Message) -> None:
        with self._lock:
            if error is None:
                self.acked.add(id_)
            else:
                self.failed[error.name()] += 1

    def resend(self, numbers: list[int]) -> None:
        """Produce requests ``numbers`` again (after the stream ended), waiting for the reports."""
        for n in numbers:
            self.produce(n)
        self._producer.flush(120)
        self.idle_at = time.monotonic()

    def wait_sent(self, fraction: float, timeout_s: float = 300) -> None:
        """Block until ``fraction`` of the stream was handed to the producer."""
        deadline = time.monotonic() + timeout_s
        while self.sent < fraction * self.count:
            assert time.monotonic() < deadline, f"stream stuck at {self.sent}/{self.count}"
            time.sleep(0.05)

    def finish(self, timeout_s: float = 300) -> float:
        """Wait for the stream to end and every delivery report; when that was (monotonic)."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"stream not done after {timeout_s} s"
        assert self.idle_at is not None
        return self.idle_at

    @property
    def indeterminate(self) -> int:
        return self.sent - len(self.acked)


@dataclass(frozen=True)
class Answer:
    """A message on the output or dead-letter topic."""

    id: str
    worker: str
    timestamp_ms: int
    reason: str = ""  # a dead letter's: torchkafka.reason and torchkafka.error


def _answer(message: Message) -> Answer:
    result = decode_result(message.value() or b"")
    return Answer(result.id, result.worker, message.timestamp()[1])


def _dead_letter(message: Message) -> Answer:
    headers = {k: _text(v or b"") for k, v in dict(message.headers() or []).items()}
    reason = f"{headers.get('torchkafka.reason')}: {headers.get('torchkafka.error')}"
    key = _text(message.key() or b"")
    return Answer(key, headers.get("torchkafka.worker", ""), message.timestamp()[1], reason)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class TopicTail:
    """Reads a topic from its beginning, without a group; ``follow`` keeps reading on a thread."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        dead_letters: bool = False,
        isolation: str = "read_committed",
    ):
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"faults-reader-{uuid.uuid4().hex}",  # never joined or committed
                "enable.auto.commit": False,
                # Exactly-once results count once committed: aborted ones are not read.
                "isolation.level": isolation,
            }
        )
        self._tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        self._consumer.assign(self._tps)
        self._parse = _dead_letter if dead_letters else _answer
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def follow(self) -> TopicTail:
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._read(0.2)

    def _read(self, timeout_s: float) -> None:
        messages = self._consumer.consume(1000, timeout=timeout_s)
        self.answers += [self._parse(m) for m in messages if m.error() is None]

    def by(self, worker: str) -> int:
        """How many answers read so far came from ``worker``."""
        return sum(1 for a in list(self.answers) if a.worker == worker)

    def read_to_end(self, timeout_s: float = 60) -> list[Answer]:
        """Stop following, read up to the end offsets of now, close; every answer read."""
        self._stop_following()
        ends = {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in self._tps
        }
        deadline = time.monotonic() + timeout_s
        while not self._at(ends):
            assert time.monotonic() < deadline, f"could not read to the end offsets {ends}"
            self._read(0.5)
        self.close()
        return self.answers

    def _stop_following(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        """Stop following and close the consumer (again: nothing)."""
        self._stop_following()
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def _at(self, ends: dict[int, int]) -> bool:
        positions = self._consumer.position(self._tps)
        return all(max(tp.offset, 0) >= ends[tp.partition] for tp in positions)
