"""The worker end to end against the real broker and Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import redis
import torch

from tests.integration.helpers import (
    IMAGE_MODEL,
    RunningWorker,
    Topics,
    committed_equals_end,
    config_for,
    produce,
    read,
    request_value,
)
from tests.support.pictures import picture, pillow_pixels, truncated_jpeg
from tests.support.worker_models import POISON, ChannelMeans, PoisonSensitiveLinear
from torchkafka.codecs import (
    Request,
    Result,
    decode_result,
    encode_request,
    encoded_image,
    read_dead_letter_info,
)
from torchkafka.codecs.testing import malformed_corpus
from torchkafka.worker.app import worker_id
from torchkafka.worker.config import WorkerConfig


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


def redis_client_names(url: str) -> set[str]:
    with redis.Redis.from_url(url) as client:
        return {str(c["name"]) for c in client.client_list()}


def produce_rows(bootstrap: str, topic: str, count: int = 40) -> dict[str, torch.Tensor]:
    """Requests ``r-0``, ``r-1``, ... (keyed by id) of small tensors, produced to ``topic``."""
    rows = {f"r-{i}": torch.full((4,), float(i)) for i in range(count)}
    produce(bootstrap, topic, [(k.encode(), request_value(k, v)) for k, v in rows.items()])
    return rows


def test_a_replay_of_the_input_topic_yields_no_second_result(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    rows = produce_rows(kafka_bootstrap, topics.input)
    first = config_for(topics, kafka_bootstrap, redis_url)
    worker = start_worker(first)
    assert len(read(kafka_bootstrap, topics.output, expect=len(rows))) == len(rows)
    name = f"torchkafka/{worker_id()}"
    assert name in redis_client_names(redis_url)
    worker.close()
    assert name not in redis_client_names(redis_url)  # the worker closed its connections

    replay = config_for(topics, kafka_bootstrap, redis_url)  # a new group reads from the start
    worker = start_worker(replay)
    deadline = time.monotonic() + 60
    while not committed_equals_end(kafka_bootstrap, replay.group_id, topics.input, 4):
        assert time.monotonic() < deadline, "the replaying worker did not catch up"
        time.sleep(0.5)
    worker.close()
    assert len(read(kafka_bootstrap, topics.output, expect=len(rows) + 1, timeout_s=5)) == len(rows)


def test_with_dedup_off_no_redis_is_needed_and_a_replay_is_answered_again(
    kafka_bootstrap: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    rows = produce_rows(kafka_bootstrap, topics.input)
    nowhere = "redis://127.0.0.1:1/0"  # nothing listens: dedup off never connects
    for run in (1, 2):  # a new group each run: the second replays the topic
        worker = start_worker(config_for(topics, kafka_bootstrap, nowhere, dedup="off"))
        answers = read(kafka_bootstrap, topics.output, expect=run * len(rows))
        worker.close()
    assert Counter(decode_result(m.value() or b"").id for m in answers) == dict.fromkeys(rows, 2)


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
        topics,
        kafka_bootstrap,
        redis_url,
        model=IMAGE_MODEL,
        input_dtype="uint8",
        image_decode_threads=2,
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


def test_a_header_key_that_is_not_utf8_is_dead_lettered_and_the_stream_goes_on(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """confluent-kafka cannot read such headers; kcat can write them.

    confluent-kafka's ``headers()`` then returns with a Python error left set,
    which CPython reports only on some call paths: once the polling code is
    warm (its calls specialized) the error surfaces in a later, unrelated call.
    So the worker reads good records first, then the bad one.
    """
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat is not None, "kcat is installed by deploy/local/install-system-deps.sh"
    worker = start_worker(config_for(topics, kafka_bootstrap, redis_url, poll_batch=1))
    warm = [(f"warm-{i}".encode(), request_value(f"warm-{i}", torch.ones(4))) for i in range(100)]
    produce(kafka_bootstrap, topics.input, warm)
    assert len(read(kafka_bootstrap, topics.output, expect=len(warm))) == len(warm)
    bad = [kcat, "-b", kafka_bootstrap, "-t", topics.input, "-P", "-p", "0", "-k", "bad"]
    written = subprocess.run(
        [*map(os.fsencode, bad), b"-H", b"\xff\xfe=x"],
        input=request_value("bad", torch.zeros(4)),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    produce(kafka_bootstrap, topics.input, [(b"good", request_value("good", torch.ones(4)))])
    results = read(kafka_bootstrap, topics.output, expect=len(warm) + 1)
    dead = read(kafka_bootstrap, topics.dead_letters, expect=1)
    worker.close()
    answered = {decode_result(m.value() or b"").id for m in results}
    assert answered == {"good"} | {key.decode() for key, _ in warm}
    headers = dead[0].headers()
    assert isinstance(headers, list)
    info = read_dead_letter_info(headers)
    assert info.reason == "invalid_headers"
    assert "headers cannot be read" in info.error
    assert dead[0].value() == request_value("bad", torch.zeros(4))  # the input, unchanged


def test_a_result_over_the_output_topics_size_limit_dead_letters_its_input(
    kafka_bootstrap: str,
    redis_url: str,
    new_topic: Callable[..., str],
    start_worker: Callable[[WorkerConfig], RunningWorker],
) -> None:
    """A result echoes its request's meta: a large meta makes a result the topic refuses."""
    topics = Topics(new_topic, output_config={"max.message.bytes": "1000"})
    meta = {"blob": "x" * 3000}
    big = encode_request(Request(id="big", inputs={"x": torch.zeros(4)}, meta=meta))
    ok = request_value("ok", torch.ones(4))
    worker = start_worker(config_for(topics, kafka_bootstrap, redis_url))
    produce(kafka_bootstrap, topics.input, [(b"big", big), (b"ok", ok)])
    results = read(kafka_bootstrap, topics.output, expect=1)
    dead = read(kafka_bootstrap, topics.dead_letters, expect=1)
    deadline = time.monotonic() + 30
    while not committed_equals_end(kafka_bootstrap, worker.config.group_id, topics.input, 4):
        assert time.monotonic() < deadline, "the worker did not commit past the big result"
        time.sleep(0.5)
    worker.close()
    assert [decode_result(m.value() or b"").id for m in results] == ["ok"]
    headers = dead[0].headers()
    assert isinstance(headers, list)
    assert read_dead_letter_info(headers).reason == "result_too_large"
    assert dead[0].value() == big
