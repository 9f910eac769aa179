"""The worker end to end against the real broker and Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from tests.unit.worker.pictures import picture, pillow_pixels, truncated_jpeg
from torchkafka.codecs import (
    Request,
    Result,
    decode_result,
    encode_request,
    encoded_image,
    read_dead_letter_info,
)
from torchkafka.codecs.testing import malformed_corpus
from torchkafka.worker._app import run_worker
from torchkafka.worker._config import WorkerConfig

from .conftest import Topics
from .worker_models import POISON, ChannelMeans, PoisonSensitiveLinear

MODEL = "python:tests.integration.worker_models:poison_sensitive_linear"
IMAGE_MODEL = "python:tests.integration.worker_models:channel_means"


def config_for(topics: Topics, bootstrap: str, redis_url: str, **overrides: object) -> WorkerConfig:
    settings: dict[str, object] = {
        "model": MODEL,
        "input_topic": topics.input,
        "output_topic": topics.output,
        "dead_letter_topic": topics.dead_letters,
        "group_id": f"tk-test-{uuid.uuid4().hex[:8]}",
        "bootstrap": bootstrap,
        "redis_url": redis_url,
        "device": "cpu",
        "max_batch_size": 16,
        "max_wait_ms": 20.0,
        "consumer": {"session.timeout.ms": "10000"},
        "metrics_port": 0,  # no fixed port: test workers may run side by side
        **overrides,
    }
    return WorkerConfig(**settings)  # type: ignore[arg-type]


class RunningWorker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            run_worker(self.config, self.stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop within 60 s"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start_worker() -> Iterator[Callable[[WorkerConfig], RunningWorker]]:
    workers: list[RunningWorker] = []

    def start(config: WorkerConfig) -> RunningWorker:
        worker = RunningWorker(config)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.thread.is_alive():
            worker.close()


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def read(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0) -> list[Message]:
    """Read ``topic`` from the start until ``expect`` messages (or the timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expect and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(200, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return messages


def request_value(request_id: str, row: torch.Tensor, deadline_ms: int | None = None) -> bytes:
    return encode_request(Request(id=request_id, inputs={"x": row}, deadline_ms=deadline_ms))


def committed_equals_end(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()
    return all(committed[p] == ends[p] or (ends[p] == 0 and committed[p] < 0) for p in ends)


def test_every_input_gets_one_result_equal_to_the_model_and_bad_ones_dead_letters(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    torch.manual_seed(0)
    rows = {f"req-{i}": torch.randn(4) for i in range(150)}
    poison = torch.tensor([POISON, 0.0, 0.0, 0.0])
    malformed = [case for case in malformed_corpus() if len(case.data) < 100_000][:8]
    values = [(rid.encode(), request_value(rid, row)) for rid, row in rows.items()]
    values += [(b"poison", request_value("poison", poison))]
    values += [(f"bad-{i}".encode(), case.data) for i, case in enumerate(malformed)]
    values += [(b"late", request_value("late", torch.zeros(4), deadline_ms=1))]
    duplicates = [(rid.encode(), request_value(rid, rows[rid])) for rid in list(rows)[:10]]
    config = config_for(topics, kafka_bootstrap, redis_url)
    worker = start_worker(config)
    produce(kafka_bootstrap, topics.input, values)
    produce(kafka_bootstrap, topics.input, duplicates)

    results = read(kafka_bootstrap, topics.output, expect=len(rows))
    dead = read(kafka_bootstrap, topics.dead_letters, expect=len(malformed) + 2)
    time.sleep(2)  # anything extra (a duplicate result) would arrive by now
    results = read(kafka_bootstrap, topics.output, expect=len(rows) + 1, timeout_s=5)
    worker.close()

    decoded: list[Result] = [decode_result(m.value() or b"") for m in results]
    assert Counter(r.id for r in decoded) == Counter(list(rows))  # each id exactly once
    model = PoisonSensitiveLinear().eval()
    for result in decoded:
        expected = model(rows[result.id].unsqueeze(0))[0].detach()
        assert torch.allclose(result.outputs["output"], expected, atol=1e-6), result.id
        assert result.model.name.endswith("poison_sensitive_linear")
    for message in results:
        assert message.key() == (decode_result(message.value() or b"").id).encode()

    reasons: Counter[str] = Counter()
    for message in dead:
        headers = message.headers()
        assert isinstance(headers, list)
        reasons[read_dead_letter_info(headers).reason] += 1
    expected_reasons = Counter(case.error.reason.value for case in malformed)
    expected_reasons.update(["model_error", "expired"])
    assert reasons == expected_reasons
    assert committed_equals_end(kafka_bootstrap, config.group_id, topics.input, 4)


def test_a_replay_of_the_input_topic_yields_no_second_result(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    rows = {f"r-{i}": torch.full((4,), float(i)) for i in range(40)}
    produce(
        kafka_bootstrap, topics.input, [(k.encode(), request_value(k, v)) for k, v in rows.items()]
    )
    first = config_for(topics, kafka_bootstrap, redis_url)
    worker = start_worker(first)
    assert len(read(kafka_bootstrap, topics.output, expect=len(rows))) == len(rows)
    worker.close()

    replay = config_for(topics, kafka_bootstrap, redis_url)  # a new group reads from the start
    worker = start_worker(replay)
    deadline = time.monotonic() + 60
    while not committed_equals_end(kafka_bootstrap, replay.group_id, topics.input, 4):
        assert time.monotonic() < deadline, "the replaying worker did not catch up"
        time.sleep(0.5)
    worker.close()
    assert len(read(kafka_bootstrap, topics.output, expect=len(rows) + 1, timeout_s=5)) == len(rows)


def test_images_decode_off_the_polling_thread_and_a_corrupt_one_is_dead_lettered(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """JPEGs and PNGs of two sizes, and a JPEG whose header reads but whose pixels do not."""
    files = {
        f"img-{i}": picture("jpeg" if i % 2 else "png", *((32, 24) if i % 3 else (20, 20)), seed=i)
        for i in range(40)
    }
    corrupt = truncated_jpeg(picture("jpeg", 32, 24, seed=99))
    sent = {**files, "corrupt": corrupt}
    values = [
        (rid.encode(), encode_request(Request(id=rid, inputs={"x": encoded_image(data)})))
        for rid, data in sent.items()
    ]
    config = config_for(
        topics, kafka_bootstrap, redis_url, model=IMAGE_MODEL, image_decode_threads=2
    )
    worker = start_worker(config)
    produce(kafka_bootstrap, topics.input, values)

    results = read(kafka_bootstrap, topics.output, expect=len(files))
    dead = read(kafka_bootstrap, topics.dead_letters, expect=1)
    deadline = time.monotonic() + 30
    while not committed_equals_end(kafka_bootstrap, config.group_id, topics.input, 4):
        assert time.monotonic() < deadline, "the worker did not commit every record"
        time.sleep(0.5)
    worker.close()

    decoded = {r.id: r for r in (decode_result(m.value() or b"") for m in results)}
    assert set(decoded) == set(files)
    model = ChannelMeans()
    for rid, data in files.items():
        expected = model(pillow_pixels(data).unsqueeze(0))[0]
        assert torch.equal(decoded[rid].outputs["output"], expected), rid
    (letter,) = dead
    assert letter.key() == b"corrupt"
    headers = letter.headers()
    assert isinstance(headers, list)
    info = read_dead_letter_info(headers)
    assert (info.reason, info.error.startswith("$: cannot decode jpeg")) == ("invalid_image", True)
