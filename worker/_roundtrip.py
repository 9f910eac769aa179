"""The smallest real end-to-end job: tensors through Kafka and back, verified.

Produces ``count`` encoded requests to a topic, reads them back with a fresh
consumer group, decodes each one and checks it equals what was sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import torch
from confluent_kafka import Consumer, KafkaError, Message, Producer
from tqdm import tqdm

from torchkafka.codecs import DTYPES, DecodeError, Encoder, Request, decode_request

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RoundTripReport:
    """What a round trip sent, got back, and how fast."""

    sent: int
    received: int
    mismatched: int
    undecodable: int
    payload_bytes: int
    produce_s: float
    consume_s: float  # from the first message back, so the group join is not counted

    @property
    def ok(self) -> bool:
        """Every message came back, decoded, equal to what was sent."""
        return self.received == self.sent and self.mismatched == 0 and self.undecodable == 0


def sample_tensor(index: int, shape: Sequence[int], dtype_name: str) -> torch.Tensor:
    """The deterministic tensor sent as message ``index``."""
    numel = 1
    for dim in shape:
        numel *= dim
    values = (torch.arange(numel, dtype=torch.int64) + index) % 97
    dtype = DTYPES[dtype_name]
    return (values > 48 if dtype is torch.bool else values.to(dtype)).reshape(tuple(shape))


def run_round_trip(
    bootstrap: str,
    topic: str,
    count: int,
    shape: Sequence[int],
    dtype_name: str,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> RoundTripReport:
    """Send ``count`` tensors through ``topic`` and verify what comes back."""
    run_id = uuid.uuid4().hex[:12]
    payload_bytes, produce_s = _produce(
        bootstrap, topic, run_id, count, shape, dtype_name, progress
    )
    received, mismatched, undecodable, consume_s = _consume_and_verify(
        bootstrap, topic, run_id, count, shape, dtype_name, timeout_s, progress
    )
    report = RoundTripReport(
        count, received, mismatched, undecodable, payload_bytes, produce_s, consume_s
    )
    log.info("round trip finished", topic=topic, run_id=run_id, ok=report.ok)
    return report


def _produce(
    bootstrap: str,
    topic: str,
    run_id: str,
    count: int,
    shape: Sequence[int],
    dtype_name: str,
    progress: bool,
) -> tuple[int, float]:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    encoder = Encoder()
    failures: list[KafkaError] = []
    bar = tqdm(total=count, desc="produce", unit="msg", disable=not progress)

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)
        bar.update(1)

    payload_bytes = 0
    start = time.perf_counter()
    for index in range(count):
        tensor = sample_tensor(index, shape, dtype_name)
        payload_bytes += tensor.numel() * tensor.element_size()
        request_id = f"{run_id}-{index}"
        value = encoder.request(Request(id=request_id, inputs={"x": tensor}))
        _produce_with_backpressure(producer, topic, value, request_id.encode(), on_delivery)
    remaining = producer.flush(30)
    elapsed = time.perf_counter() - start
    bar.close()
    if remaining or failures:
        detail = failures[0].str() if failures else f"{remaining} messages still queued"
        raise RuntimeError(f"producing to {topic!r} failed: {detail}")
    return payload_bytes, elapsed


def _produce_with_backpressure(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    """Produce; while the local queue is full, serve delivery reports and retry."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.1)
        else:
            producer.poll(0)
            return


def _consume_and_verify(
    bootstrap: str,
    topic: str,
    run_id: str,
    count: int,
    shape: Sequence[int],
    dtype_name: str,
    timeout_s: float,
    progress: bool,
) -> tuple[int, int, int, float]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"torchkafka-roundtrip-{run_id}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    prefix = f"{run_id}-"
    seen: set[str] = set()
    mismatched = undecodable = 0
    bar = tqdm(total=count, desc="consume", unit="msg", disable=not progress)
    deadline = time.perf_counter() + timeout_s
    first_at: float | None = None  # throughput counts from the first message, not the join
    try:
        while len(seen) < count and time.perf_counter() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                error = message.error()
                if error is not None:
                    raise RuntimeError(f"consuming {topic!r} failed: {error.str()}")
                key = (message.key() or b"").decode()
                if not key.startswith(prefix) or key in seen:
                    continue
                first_at = first_at or time.perf_counter()
                seen.add(key)
                bar.update(1)
                try:
                    request = decode_request(message.value() or b"")
                except DecodeError as exc:
                    undecodable += 1
                    log.error("undecodable message", key=key, error=str(exc))
                    continue
                index = int(key.removeprefix(prefix))
                decoded = request.inputs.get("x")
                expected = sample_tensor(index, shape, dtype_name)
                if not isinstance(decoded, torch.Tensor) or not torch.equal(decoded, expected):
                    mismatched += 1
    finally:
        consumer.close()
        bar.close()
    elapsed = time.perf_counter() - first_at if first_at else 0.0
    return len(seen), mismatched, undecodable, elapsed
