"""Dead letters: the original message, unchanged, plus headers saying why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HEADER_PREFIX = "torchkafka."
#: The attempts header: on a dead letter, the runs that failed; on an input record a retry
#: relay re-sent, the runs that failed before it (the worker's retry tiers read it).
ATTEMPTS_HEADER = HEADER_PREFIX + "attempts"
#: The longest ``torchkafka.error`` value, in UTF-8 bytes. An error may quote input (a
#: field name, a version string), so a longer one keeps its start and end around " … ".
MAX_ERROR_BYTES = 2048
_ELLIPSIS = " … "

#: A header value in confluent-kafka's types (None: a header without value).
HeaderValue = str | bytes | None
#: Headers as confluent-kafka's Message.headers() returns them.
Headers = Sequence[tuple[str, HeaderValue]]
#: Headers as confluent-kafka's Producer.produce(headers=...) takes them.
HeaderList = list[tuple[str, HeaderValue]]


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """Why and where a message failed; travels as ``torchkafka.*`` headers."""

    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    attempts: int
    worker: str
    time_ms: int


_FIELDS = {
    "reason": "reason",
    "error": "error",
    "source_topic": "source.topic",
    "source_partition": "source.partition",
    "source_offset": "source.offset",
    "attempts": "attempts",
    "worker": "worker",
    "time_ms": "time_ms",
}
_INT_FIELDS = frozenset({"source_partition", "source_offset", "attempts", "time_ms"})


def dead_letter_headers(original: Headers, info: DeadLetterInfo) -> HeaderList:
    """The original headers (earlier ``torchkafka.*`` ones dropped) plus ``info``'s.

    An original header keeps its value as it came: a header without a value
    (None) stays without one, it does not become empty.
    """
    headers: HeaderList = [
        (key, value) for key, value in original if not key.startswith(HEADER_PREFIX)
    ]
    for attribute, suffix in _FIELDS.items():
        text = str(getattr(info, attribute))
        if attribute == "error":
            text = _cut(text, MAX_ERROR_BYTES)
        headers.append((HEADER_PREFIX + suffix, text.encode()))
    return headers


def read_dead_letter_info(headers: Headers) -> DeadLetterInfo:
    """The ``DeadLetterInfo`` in a dead letter's headers; KeyError/ValueError if absent."""
    values = {key: _as_bytes(value) for key, value in headers}
    fields: dict[str, str | int] = {}
    for attribute, suffix in _FIELDS.items():
        text = values[HEADER_PREFIX + suffix].decode()
        fields[attribute] = int(text) if attribute in _INT_FIELDS else text
    return DeadLetterInfo(**fields)  # type: ignore[arg-type]  # types follow _INT_FIELDS


def _cut(text: str, limit: int) -> str:
    """``text`` if it is at most ``limit`` bytes of UTF-8, else its first and last bytes."""
    data = text.encode()
    if len(data) <= limit:
        return text
    half = (limit - len(_ELLIPSIS.encode())) // 2
    # A character cut in two at either end is dropped whole.
    return data[:half].decode(errors="ignore") + _ELLIPSIS + data[-half:].decode(errors="ignore")


def _as_bytes(value: HeaderValue) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""
