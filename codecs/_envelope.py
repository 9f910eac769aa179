"""The envelope every message shares: one msgpack map with a version ``v``."""

from __future__ import annotations

from typing import Any

import msgpack

from torchkafka.codecs._errors import (
    InvalidField,
    MalformedMessage,
    MessageTooLarge,
    MissingField,
    UnsupportedVersion,
)
from torchkafka.codecs._fields import describe
from torchkafka.codecs._limits import Limits
from torchkafka.codecs._messages import WIRE_VERSION


def unpack_envelope(data: bytes, limits: Limits) -> dict[str, Any]:
    """The top-level map of a message whose ``v`` this reader understands."""
    if len(data) > limits.max_message_bytes:
        raise MessageTooLarge("$", f"{len(data)} bytes, the limit is {limits.max_message_bytes}")
    try:
        # msgpack bounds each container and string by len(data), so a declared
        # length can never allocate more than the message itself.
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # any unpacker failure means malformed input
        why = str(exc) or type(exc).__name__
        raise MalformedMessage("$", f"not one well-formed msgpack value: {why}") from exc
    if type(envelope) is not dict:
        raise InvalidField("$", f"expected a map, got {describe(envelope)}")
    version = envelope.get("v")
    if version is None:
        raise MissingField("$.v", "required field is missing")
    if version != WIRE_VERSION or type(version) is not int:
        raise UnsupportedVersion("$.v", f"version {version!r}; this reader knows {WIRE_VERSION}")
    return envelope
