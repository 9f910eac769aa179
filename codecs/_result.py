"""Result messages: what the worker writes to the output topic, one per request."""

from __future__ import annotations

from typing import Any

from torchkafka.codecs._envelope import unpack_envelope
from torchkafka.codecs._errors import InvalidField
from torchkafka.codecs._fields import describe, optional, required
from torchkafka.codecs._inputs import tensors_from_wire
from torchkafka.codecs._limits import DEFAULT_LIMITS, Limits
from torchkafka.codecs._messages import WIRE_VERSION, ModelInfo, Result
from torchkafka.codecs._request import decode_id


def result_head(result: Result) -> dict[str, Any]:
    """The wire map of ``result`` but its ``outputs`` (which the encoder writes last)."""
    envelope: dict[str, Any] = {
        "v": WIRE_VERSION,
        "id": result.id,
        "model": {"name": result.model.name, "version": result.model.version},
        "timings_ms": dict(result.timings_ms),
        "worker": result.worker,
    }
    if result.meta is not None:
        envelope["meta"] = result.meta
    return envelope


def decode_result(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Result:
    """Decode and validate a result; raises a ``DecodeError`` for any bad input."""
    envelope = unpack_envelope(data, limits)
    model = required(envelope, "model", dict, "$")
    return Result(
        id=decode_id(envelope, limits),
        outputs=tensors_from_wire(required(envelope, "outputs", dict, "$"), "$.outputs", limits),
        model=ModelInfo(
            name=required(model, "name", str, "$.model"),
            version=required(model, "version", str, "$.model"),
        ),
        timings_ms=_timings(optional(envelope, "timings_ms", dict, "$") or {}),
        meta=envelope.get("meta"),
        worker=optional(envelope, "worker", str, "$") or "",
    )


def _timings(raw: dict[Any, Any]) -> dict[str, float]:
    timings: dict[str, float] = {}
    for name, value in raw.items():
        if type(name) is not str or type(value) not in (int, float):
            raise InvalidField(
                "$.timings_ms",
                f"expected string -> number, got {describe(name)} -> {describe(value)}",
            )
        timings[name] = float(value)
    return timings
