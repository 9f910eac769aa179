"""Reading a dead-letter topic: every dead letter up to the end, decoded as far as it decodes.

A dead letter is the input record, unchanged, with ``torchkafka.*`` headers
saying why (``codecs.read_dead_letter_info``). ``read_dead_letters`` assigns
every partition (no consumer group, nothing committed), reads from the start
(or from ``Selection.since_ms``) to the end offsets as they were when it began,
and yields the dead letters the selection takes.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from torchkafka.codecs import (
    HEADER_PREFIX,
    DeadLetterInfo,
    DecodeError,
    EncodedImage,
    decode_request,
    read_dead_letter_info,
    request_id_of,
)

#: Record headers as confluent-kafka gives and takes them.
HeaderList = list[tuple[str, str | bytes | None]]

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_ms(text: str, now: dt.datetime | None = None) -> int:
    """Milliseconds since the epoch from an ISO-8601 time (UTC if no zone), or a duration
    before ``now`` such as ``30m``, ``2h`` or ``7d``; ``ValueError`` otherwise."""
    match = _DURATION.match(text)
    if match:
        now = now or dt.datetime.now(dt.UTC)
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
        return int((now.timestamp() - seconds) * 1000)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 time nor a duration like 30m, 2h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to take: by reason, request id and time (all, if empty)."""

    reasons: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    since_ms: int | None = None  # the dead letter's record timestamp, inclusive
    until_ms: int | None = None  # exclusive

    def takes(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` is selected."""
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.ids and letter.request_id not in self.ids:
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or letter.timestamp_ms < self.until_ms


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: where it is, why it is there, and the input it carries."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None  # None: the input had none (a tombstone), or it was too large to keep
    #: The input record's own headers (the ``torchkafka.*`` ones removed).
    headers: HeaderList = field(default_factory=list)
    info: DeadLetterInfo | None = None  # None: no readable torchkafka.* headers
    request_id: str | None = None  # None: the value holds no readable id

    @property
    def reason(self) -> str:
        """The reason code, or ``unknown`` for a record without dead-letter headers."""
        return self.info.reason if self.info else "unknown"

    def describe_value(self) -> str:
        """The value decoded as a request, as far as it decodes."""
        if self.value is None:
            return "no value (the input had none, or it was left out: see the error)"
        try:
            request = decode_request(self.value)
        except DecodeError as exc:
            return f"{len(self.value)} bytes, not a valid request: {exc}"
        inputs = ", ".join(
            f"{name}: {_describe_input(value)}" for name, value in request.inputs.items()
        )
        return f"request {request.id!r}, inputs {inputs}"


def read_dead_letters(
    connection: Mapping[str, str], topic: str, selection: Selection, timeout_s: float = 30.0
) -> Iterator[DeadLetter]:
    """The dead letters of ``topic`` that ``selection`` takes, partition by partition order
    of arrival, up to the end offsets as they were at the start."""
    consumer = Consumer(
        {
            **connection,
            "group.id": f"torchkafka-dlq-{uuid.uuid4().hex[:8]}",  # never joined: assigned
            "enable.auto.commit": False,
            # Reaching a partition's end is announced: a transactional topic's log ends
            # on a commit marker, which no message returned carries the offset of.
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise ValueError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in sorted(metadata.partitions)
        }
        ends = {p: high for p, (_, high) in marks.items()}
        starts = _start_offsets(consumer, topic, marks, selection, timeout_s)
        left = {p for p, start in starts.items() if start < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(left)])
        while left:
            for message in consumer.consume(500, timeout=1.0):
                partition, offset, error = message.partition(), message.offset(), message.error()
                if partition not in left or offset is None:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.discard(partition)
                    continue
                if offset >= ends[partition] - 1:
                    left.discard(partition)
                if offset < ends[partition]:
                    letter = to_dead_letter(message)
                    if selection.takes(letter):
                        yield letter
    finally:
        consumer.close()


def to_dead_letter(message: Message) -> DeadLetter:
    """A consumed dead-letter record as a ``DeadLetter``."""
    raw = message.headers() or []
    headers = list(raw.items()) if isinstance(raw, dict) else list(raw)
    try:
        info: DeadLetterInfo | None = read_dead_letter_info(headers)
    except (KeyError, ValueError, UnicodeDecodeError):
        info = None
    own = [(key, value) for key, value in headers if not key.startswith(HEADER_PREFIX)]
    value = message.value()
    return DeadLetter(
        message.partition() or 0,
        message.offset() or 0,
        message.timestamp()[1],
        message.key(),
        value,
        own,
        info,
        request_id_of(value),
    )


def _start_offsets(
    consumer: Consumer,
    topic: str,
    marks: Mapping[int, tuple[int, int]],
    selection: Selection,
    timeout_s: float,
) -> dict[int, int]:
    """Per partition (``marks``: its low and high watermarks), where to start: the first
    record at or after ``since_ms``, or the log's start."""
    if selection.since_ms is None:
        return {p: low for p, (low, _) in marks.items()}
    asked = [TopicPartition(topic, p, selection.since_ms) for p in marks]
    found = consumer.offsets_for_times(asked, timeout=timeout_s)
    # -1: no record that late; the end then (nothing to read)
    return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}


def _describe_input(value: object) -> str:
    if isinstance(value, EncodedImage):
        return f"image {value.format} {value.width}x{value.height}"
    dtype = str(getattr(value, "dtype", "?")).removeprefix("torch.")
    return f"tensor {dtype} {list(getattr(value, 'shape', []))}"
