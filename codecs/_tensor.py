"""Tensors <-> wire maps ``{"kind": "tensor", "dtype", "shape", "data"}``."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch

from torchkafka.codecs._dtypes import WireDtype, wire_name
from torchkafka.codecs._errors import (
    DecodeError,
    EncodeError,
    InvalidField,
    InvalidShape,
    PayloadSizeMismatch,
    TooManyDims,
    TooManyElements,
    UnsupportedDtype,
)
from torchkafka.codecs._fields import describe, required
from torchkafka.codecs._limits import Limits

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is LE
    raise ImportError("torchkafka.codecs needs a little-endian host (the wire format is LE)")

TENSOR_KIND = "tensor"


def tensor_array(tensor: torch.Tensor) -> tuple[str, np.ndarray[Any, Any]]:
    """The wire dtype name of ``tensor`` and its bytes as a C-contiguous CPU array.

    The array is a view, not a copy, when the tensor is on the CPU and
    contiguous; bfloat16 (which numpy lacks) is viewed as int16.
    """
    name = wire_name(tensor.dtype)
    if name is None:
        raise EncodeError(f"dtype {tensor.dtype} has no wire encoding")
    if not tensor.is_cpu or tensor.requires_grad:
        tensor = tensor.detach().cpu()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    if name == "bfloat16":  # numpy has no bfloat16; its bytes are int16-sized
        tensor = tensor.view(torch.int16)
    return name, tensor.numpy()


def tensor_from_wire(obj: dict[str, Any], limits: Limits) -> torch.Tensor:
    """A tensor viewing ``obj["data"]`` without copying it, after every check passes.

    Error paths are relative to ``obj`` (the caller places them with
    ``DecodeError.under``). The tensor shares memory with the received bytes:
    treat it as read-only (clone it before writing to it).
    """
    name = obj.get("dtype")
    dims = obj.get("shape")
    data = obj.get("data")
    if type(name) is not str or type(dims) is not list or type(data) is not bytes:
        raise _field_error(obj)
    wire = limits.allowed_dtype(name)
    if wire is None:
        raise UnsupportedDtype(".dtype", f"dtype {name!r:.40} is not accepted")
    if len(dims) > limits.max_dims:
        raise TooManyDims(".shape", f"{len(dims)} dimensions, the limit is {limits.max_dims}")
    numel = 1
    extent = 1  # the product of the non-zero dimensions: bounds the strides of an empty tensor
    max_elements = limits.max_elements
    for dim in dims:
        if type(dim) is not int or dim < 0:
            raise _bad_dimension(dims)
        numel *= dim
        extent *= max(dim, 1)
        if extent > max_elements:
            raise TooManyElements(
                ".shape", f"{dims} spans over {max_elements} elements (the limit), even if empty"
            )
    if len(data) != numel * wire.itemsize:
        raise PayloadSizeMismatch(
            ".data", f"{len(data)} bytes, but {name} {dims} needs {numel * wire.itemsize}"
        )
    shape = tuple(dims)
    if numel == 0:
        return torch.empty(shape, dtype=wire.torch)
    tensor = read_only_view(data, wire, shape)
    if wire.torch is torch.bool and bool(tensor.view(torch.uint8).gt(1).any()):
        raise InvalidField(".data", "bool bytes must be 0x00 or 0x01")
    return tensor


def _field_error(obj: dict[str, Any]) -> DecodeError:
    """The error for the first of dtype, shape, data that is missing or mistyped."""
    try:
        for key, kind in (("dtype", str), ("shape", list), ("data", bytes)):
            required(obj, key, kind, "")
    except DecodeError as exc:
        return exc
    raise AssertionError("called with valid fields")  # pragma: no cover


def _bad_dimension(dims: list[Any]) -> InvalidShape:
    index, dim = next((i, d) for i, d in enumerate(dims) if type(d) is not int or d < 0)
    detail = dim if type(dim) is int else describe(dim)
    return InvalidShape(
        f".shape[{index}]", f"a dimension must be a non-negative integer, got {detail}"
    )


_warned_read_only = False


def read_only_view(data: bytes, wire: WireDtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor over immutable ``data`` (no copy), without torch's one-time warning.

    Goes through numpy: ``torch.from_numpy(np.ndarray(shape, dtype, data))``
    costs a third of ``torch.frombuffer(...).view(...)``, which matters for
    small messages. ``data`` must hold exactly the bytes of ``shape``.
    """
    global _warned_read_only
    array = np.ndarray(shape, wire.numpy, data)
    if _warned_read_only:
        tensor = torch.from_numpy(array)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            tensor = torch.from_numpy(array)
        _warned_read_only = True
    return tensor.view(torch.bfloat16) if wire.torch is torch.bfloat16 else tensor
