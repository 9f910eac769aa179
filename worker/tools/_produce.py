"""Producing requests: what to send, how fast, and without ever dropping one.

``RequestFactory`` builds request *n*; ``Pacer`` spaces sends to a rate (a
token bucket that sleeps, never spins); ``Sender`` produces to one topic,
waits out a full local queue by serving deliveries, and counts what the broker
acknowledged or refused. ``produce_requests`` puts them together for
``torchkafka produce``; the demo and the worker benchmark use the parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from torchkafka.codecs import EncodeError, Encoder, Input, Request, encoded_image
from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker._errors import StartupError

#: File suffixes ``image_inputs`` sends (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def wall_ms() -> float:
    """Unix time in milliseconds: the clock of ``sent_ms`` and ``deadline_ms``."""
    return time.time() * 1000


def image_inputs(folder: Path) -> list[Input]:
    """The JPEG and PNG files directly in ``folder``, by name, as image inputs.

    Raises ``ValueError`` naming the folder or the file that is not usable.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no .jpg, .jpeg or .png files in {folder}")
    images: list[Input] = []
    for path in paths:
        try:
            images.append(encoded_image(path.read_bytes()))
        except EncodeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return images


@dataclass(frozen=True, slots=True)
class RequestFactory:
    """Builds request ``n``: id ``{id_prefix}-{n}``, ``inputs[n % len(inputs)]`` as the input.

    ``meta`` carries ``sent_ms`` (when the request was built) for end-to-end
    latency; ``deadline_ms``, when set, is relative: the request's absolute
    deadline is ``sent_ms + deadline_ms``.
    """

    id_prefix: str
    inputs: Sequence[Input]
    input_name: str = "x"
    deadline_ms: int | None = None
    clock_ms: Callable[[], float] = wall_ms

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("a RequestFactory needs at least one input")

    def __call__(self, n: int) -> Request:
        now_ms = self.clock_ms()
        return Request(
            id=f"{self.id_prefix}-{n}",
            inputs={self.input_name: self.inputs[n % len(self.inputs)]},
            meta={"sent_ms": now_ms},
            deadline_ms=None if self.deadline_ms is None else int(now_ms) + self.deadline_ms,
        )


class Pacer:
    """A token bucket: ``wait()`` returns when a send fits ``rate`` per second.

    The bucket holds at most ``burst`` tokens (default: 50 ms worth, at least
    one) and starts with one, so a late wake-up is made up for by the next
    sends without the long-run rate exceeding ``rate``. ``sleep`` may return
    early (e.g. a producer poll that served a delivery); ``wait`` then sleeps
    again. Inject ``clock`` and ``sleep`` to test without time passing.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s, got {rate}")
        self.rate = rate
        self.burst = max(1.0, rate * 0.05) if burst is None else burst
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        self._clock = clock
        self._sleep = sleep
        self._tokens = 1.0
        self._stamp = clock()

    def wait(self) -> None:
        """Block until a token is available, then take it."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1 - 1e-9:  # not a rounding error's worth of sleep
                self._tokens -= 1
                return
            self._sleep((1 - self._tokens) / self.rate)


@dataclass(slots=True)
class SendStats:
    """What a ``Sender`` sent and what the broker said about it."""

    sent: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the report

    def summary(self, elapsed_s: float) -> str:
        """One line: messages, MB and messages/s over ``elapsed_s``."""
        rate = self.sent / elapsed_s if elapsed_s > 0 else 0.0
        line = (
            f"sent {self.sent} messages, {self.bytes / 1e6:.1f} MB in {elapsed_s:.1f} s "
            f"({rate:.0f} msg/s), {self.failed} delivery errors"
        )
        return line + (f" (first: {self.errors[0]})" if self.errors else "")


def produce_waiting(producer: Producer, topic: str, **message: Any) -> None:
    """Queue one message to ``topic``; while the local queue is full, serve deliveries and
    retry (a full queue is waited out, never dropped). A refusal at once raises."""
    while True:
        try:
            producer.produce(topic, **message)
            return
        except BufferError:
            producer.poll(0.05)


class Sender:
    """Produces to one topic; a full local queue is waited out, never dropped."""

    MAX_ERRORS_KEPT = 5

    def __init__(self, producer: Producer, topic: str) -> None:
        self.stats = SendStats()
        self._producer = producer
        self._topic = topic

    def send(self, key: bytes, value: bytes) -> None:
        """Queue one message; while the local queue is full, serve deliveries and retry."""
        produce_waiting(
            self._producer, self._topic, key=key, value=value, on_delivery=self._on_delivery
        )
        self.stats.sent += 1
        self.stats.bytes += len(value)
        self._producer.poll(0)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery callbacks for up to ``timeout_s`` (a sleep that does work).

        librdkafka counts whole milliseconds, so the wait is rounded up: a
        shorter one would return at once and make a pacing loop spin.
        """
        self._producer.poll(math.ceil(timeout_s * 1000) / 1000)

    def flush(self, timeout_s: float = 30.0) -> SendStats:
        """Wait for every delivery; what is still unacknowledged after ``timeout_s`` failed."""
        undelivered = int(self._producer.flush(timeout_s))
        if undelivered:
            self._failed(undelivered, f"not acknowledged within {timeout_s:.0f} s")
        return self.stats

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.stats.delivered += 1
        else:
            self._failed(1, str(error))

    def _failed(self, count: int, error: str) -> None:
        self.stats.failed += count
        if len(self.stats.errors) < self.MAX_ERRORS_KEPT:
            self.stats.errors.append(error)


def produce_requests(
    sender: Sender,
    factory: RequestFactory,
    count: int,
    rate: float | None = None,
    *,
    progress: bool = True,
) -> float:
    """Send requests ``0 .. count - 1`` (at ``rate`` per second, or as fast as possible).

    Ctrl-C stops sending early. Waits for every delivery of what was sent;
    returns the seconds from the first send until the last acknowledgement.
    Outcomes are in ``sender.stats``.
    """
    pacer = None if rate is None else Pacer(rate, sleep=sender.poll)
    encoder = Encoder()
    started = time.monotonic()
    with tqdm(total=count, desc="requests", unit="msg", disable=not progress) as bar:
        try:
            for n in range(count):
                if pacer is not None:
                    pacer.wait()
                request = factory(n)
                sender.send(request.id.encode(), encoder.request(request))
                bar.update(1)
        except KeyboardInterrupt:
            bar.write("interrupted: waiting for the deliveries of what was sent")
        sender.flush()
    return time.monotonic() - started


@dataclass(frozen=True, slots=True)
class ProduceSettings:
    """What ``torchkafka produce`` sends, where and how fast."""

    connection: Mapping[str, str]  # librdkafka settings: bootstrap, security
    topic: str
    count: int
    id_prefix: str
    shape: tuple[int, ...]  # synthetic tensors, unless ``images``
    dtype: str
    input_name: str
    images: Path | None = None
    rate: float | None = None  # None: as fast as possible
    deadline_ms: int | None = None  # relative to when each request is sent


def run_produce(settings: ProduceSettings) -> int:
    """``torchkafka produce``: prints a one-line summary; 1 if any delivery failed.

    Raises ``StartupError`` for inputs it cannot build (bad dtype, no images).
    """
    try:
        inputs = (
            image_inputs(settings.images)
            if settings.images is not None
            else [synthetic_input(settings.shape, settings.dtype)]
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    factory = RequestFactory(settings.id_prefix, inputs, settings.input_name, settings.deadline_ms)
    producer = Producer({**settings.connection, "enable.idempotence": True, "linger.ms": 5})
    sender = Sender(producer, settings.topic)
    elapsed_s = produce_requests(sender, factory, settings.count, settings.rate)
    print(sender.stats.summary(elapsed_s))
    return 1 if sender.stats.failed else 0
