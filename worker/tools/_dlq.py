"""``torchkafka dlq``: what is in the dead-letter topic, and sending dead letters back.

``inspect`` counts the selected dead letters by reason and by hour and shows
samples decoded as far as they decode. ``replay`` sends them to the input
topic again, after a fix: the original key, value (so the same request id:
the worker's dedup still holds) and headers, plus ``torchkafka.replayed_from``
naming the dead letter; at most ``rate`` a second, with a progress bar, and a
JSON-lines record of what was sent where. A dead letter whose value was left
out (too large to dead-letter whole) cannot be replayed and is counted as such.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tqdm import tqdm

from torchkafka.client import produce_waiting
from torchkafka.worker.tools._dlq_read import DeadLetter, Selection, read_dead_letters

#: Told each replayed dead letter's delivery: its error (None: delivered) and the message.
Delivered = Callable[[DeadLetter, KafkaError | None, Message | None], None]
#: The header a replayed record carries: ``DLQ_TOPIC:PARTITION:OFFSET`` of its dead letter.
REPLAYED_FROM = "torchkafka.replayed_from"


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def inspect_dead_letters(
    connection: Mapping[str, str],
    topic: str,
    selection: Selection,
    samples: int,
    out: TextIO | None = None,
) -> int:
    """Print counts by reason and by hour, then up to ``samples`` dead letters; exit code 0."""
    out = out or sys.stdout
    reasons: Counter[str] = Counter()
    hours: Counter[str] = Counter()
    shown: list[DeadLetter] = []
    for letter in read_dead_letters(connection, topic, selection):
        reasons[letter.reason] += 1
        hours[_utc(letter.timestamp_ms)[:13] + ":00Z"] += 1
        if len(shown) < samples:
            shown.append(letter)
    total = sum(reasons.values())
    print(f"{topic}: {total} dead letters selected", file=out)
    if not total:
        return 0
    print("by reason:", file=out)
    for reason, count in reasons.most_common():
        print(f"  {reason:<28} {count:>8}", file=out)
    print("by hour (UTC):", file=out)
    for hour, count in sorted(hours.items()):
        print(f"  {hour:<28} {count:>8}", file=out)
    for letter in shown:
        print(_sample(topic, letter), file=out)
    return 0


def _sample(topic: str, letter: DeadLetter) -> str:
    lines = [f"{topic}[{letter.partition}]@{letter.offset}  {_utc(letter.timestamp_ms)}"]
    lines.append(f"  reason: {letter.reason}")
    if letter.info is not None:
        info = letter.info
        lines.append(f"  error: {info.error}")
        lines.append(
            f"  from: {info.source_topic}[{info.source_partition}]@{info.source_offset}, "
            f"worker {info.worker}, attempts {info.attempts}"
        )
    lines.append(f"  id: {letter.request_id if letter.request_id is not None else '(none)'}")
    lines.append(f"  value: {letter.describe_value()}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Where to send what: the input topic, the pace, and where the record goes."""

    source: str  # the dead-letter topic
    target: str  # the input topic
    rate: float | None  # records a second; None: as fast as the producer goes
    record: Path | None  # JSON lines of what was sent; None: a dry run


def replay_dead_letters(
    connection: Mapping[str, str],
    plan: ReplayPlan,
    selection: Selection,
    out: TextIO | None = None,
) -> int:
    """Send the selected dead letters to ``plan.target``; the exit code (1: a send failed).

    A dry run (no ``plan.record``) prints what would be sent and sends nothing.
    """
    out = out or sys.stdout
    letters = list(read_dead_letters(connection, plan.source, selection))
    sendable = [letter for letter in letters if letter.value is not None]
    skipped = len(letters) - len(sendable)
    note = f" ({skipped} without a value: not replayable)" if skipped else ""
    if plan.record is None:
        print(
            f"dry run: {len(sendable)} of {len(letters)} would go to {plan.target}{note}", file=out
        )
        for letter in sendable:
            print(f"  {plan.source}[{letter.partition}]@{letter.offset} {letter.reason} "
                  f"id {letter.request_id}", file=out)  # fmt: skip
        return 0
    failures = _send(connection, plan, plan.record, sendable)
    sent = len(sendable) - failures
    print(
        f"replayed {sent} of {len(letters)} to {plan.target}{note}; record: {plan.record}", file=out
    )
    if failures:
        print(f"{failures} could not be sent (see the record)", file=sys.stderr)
    return 1 if failures else 0


def _send(
    connection: Mapping[str, str], plan: ReplayPlan, record_path: Path, letters: list[DeadLetter]
) -> int:
    """Produce ``letters`` at ``plan.rate``, writing a line per delivery; the failures."""
    producer = Producer({**connection, "enable.idempotence": True, "acks": "all"})
    failures = 0
    with (
        record_path.open("a", encoding="utf-8") as record,
        tqdm(total=len(letters), desc="replayed", unit="msg", file=sys.stderr) as bar,
    ):

        def delivered(
            letter: DeadLetter, error: KafkaError | None, message: Message | None
        ) -> None:
            nonlocal failures
            failures += error is not None
            record.write(json.dumps(_record_line(plan, letter, error, message)) + "\n")
            bar.update(1)

        started = time.monotonic()
        for n, letter in enumerate(letters):
            if plan.rate:
                time.sleep(max(0.0, started + n / plan.rate - time.monotonic()))
            headers = [*letter.headers, (REPLAYED_FROM, _origin(plan, letter).encode())]
            _produce(producer, plan.target, letter, headers, delivered)
        producer.flush()
    return failures


def _produce(
    producer: Producer,
    topic: str,
    letter: DeadLetter,
    headers: list[tuple[str, str | bytes | None]],
    delivered: Delivered,
) -> None:
    """Produce one, waiting out a full local queue; a refusal at once counts as its delivery."""
    try:
        produce_waiting(
            producer,
            topic,
            value=letter.value,
            key=letter.key,
            headers=headers,
            on_delivery=lambda error, message: delivered(letter, error, message),
        )
    except KafkaException as exc:  # refused at once (too large, unknown topic)
        delivered(letter, exc.args[0], None)
        return
    producer.poll(0)


def _origin(plan: ReplayPlan, letter: DeadLetter) -> str:
    return f"{plan.source}:{letter.partition}:{letter.offset}"


def _record_line(
    plan: ReplayPlan, letter: DeadLetter, error: KafkaError | None, message: Message | None
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "dead_letter": _origin(plan, letter),
        "id": letter.request_id,
        "reason": letter.reason,
        "replayed_at": _utc(int(time.time() * 1000)),
    }
    if error is not None:
        line["error"] = error.str()
    elif message is not None:
        line["sent_to"] = f"{message.topic()}:{message.partition()}:{message.offset()}"
    return line
