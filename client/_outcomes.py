"""Reading one message of the result or dead-letter topic as the outcome of a request."""

from __future__ import annotations

from confluent_kafka import Message

from torchkafka.client._errors import DeadLettered, UnreadableOutcome
from torchkafka.codecs import (
    DecodeError,
    Result,
    decode_result,
    read_dead_letter_info,
    request_id_of,
)

#: What a request ends in: its result, or the error saying why it was dead-lettered.
Outcome = Result | DeadLettered


def read_outcome(message: Message, dead_letter_topic: str | None) -> Outcome:
    """The ``Result`` in ``message``, or ``DeadLettered`` when it comes from ``dead_letter_topic``.

    Raises ``UnreadableOutcome`` (saying where and why) for a result that
    does not decode, or a dead letter without an id or its headers.
    """
    value = message.value() or b""
    where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
    if message.topic() != dead_letter_topic:
        try:
            return decode_result(value)
        except DecodeError as exc:
            raise UnreadableOutcome(f"undecodable message at {where}: {exc.reason}: {exc}") from exc
    request_id = request_id_of(value)
    if request_id is None:
        raise UnreadableOutcome(f"a dead letter at {where} carries no request id")
    headers = message.headers() or []
    try:
        info = read_dead_letter_info(headers if isinstance(headers, list) else [])
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise UnreadableOutcome(
            f"a dead letter at {where} lacks its torchkafka headers ({exc})"
        ) from exc
    return DeadLettered(request_id, info)
