"""The envelope every message shares: one msgpack map with a version ``v``."""

from __future__ import annotations

from typing import Any

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
from torchkafka.codecs._unpack import unpack


def unpack_envelope(data: bytes | None, limits: Limits) -> dict[str, Any]:
    """The top-level map of a message whose ``v`` this reader understands.

    ``data`` is None for a Kafka record without a value (a tombstone).
    """
    if data is None:
        raise MalformedMessage("$", "no value: the record's value is null (a tombstone)")
    if len(data) > limits.max_message_bytes:
        raise MessageTooLarge("$", f"{len(data)} bytes, the limit is {limits.max_message_bytes}")
    envelope = unpack(data)
    if type(envelope) is not dict:
        raise InvalidField("$", f"expected a map, got {describe(envelope)}")
    version = envelope.get("v")
    if version is None:
        raise MissingField("$.v", "required field is missing")
    if version != WIRE_VERSION or type(version) is not int:
        raise UnsupportedVersion("$.v", f"version {version!r}; this reader knows {WIRE_VERSION}")
    return envelope
