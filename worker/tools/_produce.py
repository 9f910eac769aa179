"""Producing requests: what to send, how fast, and without ever dropping one.

``RequestFactory`` builds request *n*; ``Pacer`` spaces sends to a rate (a
token bucket that sleeps, never spins); the client's ``RequestSender``
produces them. ``produce_requests`` puts them together for ``torchkafka
produce``; the demo and the benchmarks use the parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from tqdm import tqdm

from torchkafka.client import RequestSender
from torchkafka.codecs import EncodeError, Input, Request, encoded_image
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


def produce_requests(
    sender: RequestSender,
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
    started = time.monotonic()
    with tqdm(total=count, desc="requests", unit="msg", disable=not progress) as bar:
        try:
            for n in range(count):
                if pacer is not None:
                    pacer.wait()
                sender.send(factory(n))
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
    sender = RequestSender(producer, settings.topic)
    elapsed_s = produce_requests(sender, factory, settings.count, settings.rate)
    print(sender.stats.summary(elapsed_s))
    return 1 if sender.stats.failed else 0
