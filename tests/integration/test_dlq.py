"""``torchkafka dlq``: dead letters of a real worker, inspected, then replayed after a fix.

Worker A's model raises on poison rows (their requests become ``model_error``
dead letters); after the "fix" (worker B, same group, a model without the
check) the replayed dead letters are answered, once: replaying them again
sends them again, and the worker's dedup answers none twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from confluent_kafka import Producer

from tests.integration.helpers import (
    RunningWorker,
    Topics,
    committed_equals_end,
    config_for,
    produce,
    read,
    request_value,
    run_cli,
)
from tests.integration.streams import wait_until
from tests.support.worker_models import POISON
from torchkafka.codecs import DeadLetterInfo, dead_letter_headers, decode_result

FIXED_MODEL = "python:tests.support.worker_models:slow_linear"


def keyed(request_id: str, value: float) -> tuple[bytes, bytes]:
    return request_id.encode(), request_value(request_id, torch.full((4,), value))


def answered(bootstrap: str, topic: str, expect: int) -> Counter[str]:
    return Counter(decode_result(m.value() or b"").id for m in read(bootstrap, topic, expect, 20))


def test_dead_letters_are_inspected_and_replayed_after_a_fix_once_each(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = Topics(new_topic)
    good = [keyed(f"ok-{n}", float(n)) for n in range(5)]
    poison = [keyed(f"p-{n}", POISON) for n in range(3)]
    produce(kafka_bootstrap, topics.input, [*good, *poison, (b"bad", b"\xc1")])
    config = config_for(topics, kafka_bootstrap, redis_url)
    worker = RunningWorker(config)
    try:
        assert len(read(kafka_bootstrap, topics.dead_letters, 4)) == 4
        assert answered(kafka_bootstrap, topics.output, 5) == {f"ok-{n}": 1 for n in range(5)}
        wait_until(
            lambda: committed_equals_end(kafka_bootstrap, config.group_id, topics.input, 4),
            30, "worker A's commits",
        )  # fmt: skip
    finally:
        worker.close()

    cli_topics = (
        "--input-topic", topics.input, "--dead-letter-topic", topics.dead_letters,
        "--bootstrap", kafka_bootstrap,
    )  # fmt: skip
    inspected = run_cli("dlq", "inspect", *cli_topics, "--samples", "1")
    assert inspected.returncode == 0, inspected.stderr
    lines = inspected.stdout.splitlines()
    assert lines[0] == f"{topics.dead_letters}: 4 dead letters selected"
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[2:4]}
    assert counts == {"model_error": 3, "malformed_msgpack": 1}
    assert any(line.startswith("  value: ") for line in lines)
    only = run_cli("dlq", "inspect", *cli_topics, "--reason", "malformed_msgpack", "--samples", "0")
    assert only.stdout.splitlines()[0] == f"{topics.dead_letters}: 1 dead letters selected"

    dry = run_cli("dlq", "replay", *cli_topics, "--reason", "model_error", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == f"dry run: 3 of 3 would go to {topics.input}"
    record = tmp_path / "replayed.jsonl"
    replay = ("dlq", "replay", *cli_topics, "--reason", "model_error", "--record", str(record))
    first = run_cli(*replay)
    assert first.returncode == 0, first.stderr
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(line["id"] for line in sent) == ["p-0", "p-1", "p-2"]
    assert all(line["sent_to"].startswith(f"{topics.input}:") for line in sent)

    fixed = config_for(
        topics, kafka_bootstrap, redis_url, model=FIXED_MODEL, group_id=config.group_id
    )
    worker = RunningWorker(fixed)
    try:
        expected = {f"ok-{n}": 1 for n in range(5)} | {f"p-{n}": 1 for n in range(3)}
        assert answered(kafka_bootstrap, topics.output, 8) == expected
        assert run_cli(*replay).returncode == 0  # the same dead letters, sent again
        wait_until(
            lambda: committed_equals_end(kafka_bootstrap, fixed.group_id, topics.input, 4),
            30, "worker B's commits after the second replay",
        )  # fmt: skip
        assert answered(kafka_bootstrap, topics.output, 9) == expected, "an id answered twice"
    finally:
        worker.close()
    assert len(record.read_text().splitlines()) == 6


def test_inspect_ends_on_a_dead_letter_topic_written_in_transactions(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """Exactly-once workers dead-letter in transactions: the log ends on a commit marker."""
    topic = new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    producer.begin_transaction()
    info = DeadLetterInfo("malformed_msgpack", "not msgpack", "in", 0, 1, 1, "w", 0)
    producer.produce(topic, b"\xc1", headers=dead_letter_headers([], info))
    producer.commit_transaction(30)
    args = ("--input-topic", "in", "--dead-letter-topic", topic, "--bootstrap", kafka_bootstrap)
    inspected = run_cli("dlq", "inspect", *args, timeout_s=60)
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.splitlines()[0] == f"{topic}: 1 dead letters selected"
