"""Named inputs and outputs: maps of tensor or image wire maps."""

from __future__ import annotations

from typing import Any

import torch

from torchkafka.codecs._errors import DecodeError, InvalidField
from torchkafka.codecs._fields import describe, required
from torchkafka.codecs._image import IMAGE_KIND, image_from_wire
from torchkafka.codecs._limits import Limits
from torchkafka.codecs._messages import Input
from torchkafka.codecs._tensor import TENSOR_KIND, tensor_from_wire


def inputs_from_wire(wire: dict[Any, Any], path: str, limits: Limits) -> dict[str, Input]:
    """Named tensors (views over the message) and checked, still-encoded images."""
    decoded: dict[str, Input] = {}
    for name, obj in wire.items():
        if type(name) is not str or not name:
            got = "an empty string" if name == "" else describe(name)
            raise InvalidField(path, f"names must be non-empty strings, got {got}")
        try:
            decoded[name] = _input_from_wire(obj, limits)
        except DecodeError as exc:
            raise exc.under(f"{path}[{name[:64]!r}]") from exc.__cause__
    return decoded


def tensors_from_wire(wire: dict[Any, Any], path: str, limits: Limits) -> dict[str, torch.Tensor]:
    """Named tensors only (result outputs); an image here is an invalid field."""
    decoded: dict[str, torch.Tensor] = {}
    for name, value in inputs_from_wire(wire, path, limits).items():
        if not isinstance(value, torch.Tensor):
            raise InvalidField(f"{path}[{name[:64]!r}].kind", "outputs must be tensors")
        decoded[name] = value
    return decoded


def _input_from_wire(obj: object, limits: Limits) -> Input:
    if type(obj) is not dict:
        raise InvalidField("", f"expected a map, got {describe(obj)}")
    kind = required(obj, "kind", str, "")
    if kind == TENSOR_KIND:
        return tensor_from_wire(obj, limits)
    if kind == IMAGE_KIND:
        return image_from_wire(obj, limits)
    raise InvalidField(".kind", f"expected 'tensor' or 'image', got {kind!r:.40}")
