"""Request messages: the envelope producers write to the input topic."""

from __future__ import annotations

from typing import Any

from torchkafka.codecs._envelope import unpack_envelope
from torchkafka.codecs._errors import EncodeError, IdTooLong, InvalidField, TooManyInputs
from torchkafka.codecs._fields import optional, required
from torchkafka.codecs._inputs import inputs_from_wire
from torchkafka.codecs._limits import DEFAULT_LIMITS, Limits
from torchkafka.codecs._messages import WIRE_VERSION, Request


def request_head(request: Request) -> dict[str, Any]:
    """The wire map of ``request`` but its ``inputs`` (which the encoder writes last)."""
    if not isinstance(request.id, str) or not request.id:
        raise EncodeError(f"a request id must be a non-empty string, got {request.id!r}")
    if not request.inputs:
        raise EncodeError(f"request {request.id!r} has no inputs")
    envelope: dict[str, Any] = {"v": WIRE_VERSION, "id": request.id}
    if request.meta is not None:
        envelope["meta"] = request.meta
    if request.deadline_ms is not None:
        envelope["deadline_ms"] = request.deadline_ms
    return envelope


def decode_request(data: bytes | None, limits: Limits = DEFAULT_LIMITS) -> Request:
    """Decode and validate a request; raises a ``DecodeError`` for any bad input.

    ``data`` is a record's value: None for a record without one (a tombstone),
    which is ``malformed_msgpack``.
    """
    envelope = unpack_envelope(data, limits)
    request_id = decode_id(envelope, limits)
    inputs = required(envelope, "inputs", dict, "$")
    if not inputs:
        raise InvalidField("$.inputs", "a request needs at least one input")
    if len(inputs) > limits.max_inputs:
        raise TooManyInputs("$.inputs", f"{len(inputs)} inputs, the limit is {limits.max_inputs}")
    deadline_ms = optional(envelope, "deadline_ms", int, "$")
    if deadline_ms is not None and deadline_ms < 0:
        raise InvalidField("$.deadline_ms", f"must be >= 0 (ms since the epoch), got {deadline_ms}")
    return Request(
        id=request_id,
        inputs=inputs_from_wire(inputs, "$.inputs", limits),
        meta=envelope.get("meta"),
        deadline_ms=deadline_ms,
    )


def decode_id(envelope: dict[str, Any], limits: Limits) -> str:
    """The envelope's non-empty ``id``, at most ``limits.max_id_bytes`` in UTF-8."""
    message_id = required(envelope, "id", str, "$")
    if not message_id:
        raise InvalidField("$.id", "must not be empty")
    # UTF-8 takes at most 4 bytes a character: only long ids need encoding to measure.
    if len(message_id) * 4 > limits.max_id_bytes:
        size = len(message_id.encode())
        if size > limits.max_id_bytes:
            raise IdTooLong("$.id", f"{size} bytes, the limit is {limits.max_id_bytes}")
    return message_id
