"""Test helpers shipped with the codecs: a corpus of malformed requests, synthetic inputs.

Each case is a message that ``decode_request`` must reject with one specific
``DecodeError`` subclass. The worker's tests send the same corpus through
Kafka and expect one dead letter per case with that reason.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import torch
from PIL import Image

from torchkafka.codecs._dtypes import DTYPES
from torchkafka.codecs._errors import (
    DecodeError,
    IdTooLong,
    ImageTooLarge,
    InvalidField,
    InvalidImage,
    InvalidShape,
    MalformedMessage,
    MessageTooLarge,
    MissingField,
    PayloadSizeMismatch,
    TooManyDims,
    TooManyElements,
    TooManyInputs,
    UnsupportedDtype,
    UnsupportedVersion,
)
from torchkafka.codecs._limits import DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class MalformedCase:
    """A named bad message and the error it must raise."""

    name: str
    data: bytes
    error: type[DecodeError]


def pack(obj: object) -> bytes:
    """``obj`` as msgpack, bytes as ``bin`` and strings as ``str``."""
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def request_map(**overrides: Any) -> dict[str, Any]:
    """A valid request map (one 2x2 float32 tensor) with fields replaced or removed."""
    request: dict[str, Any] = {
        "v": 1,
        "id": "case-1",
        "inputs": {"x": tensor_map()},
    }
    for key, value in overrides.items():
        if value is REMOVE:
            request.pop(key)
        else:
            request[key] = value
    return request


def tensor_map(**overrides: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "kind": "tensor",
        "dtype": "float32",
        "shape": [2, 2],
        "data": bytes(16),
    }
    for key, value in overrides.items():
        if value is REMOVE:
            tensor.pop(key)
        else:
            tensor[key] = value
    return tensor


#: An override of ``request_map`` or ``tensor_map`` that removes the field.
REMOVE = object()


def jpeg_bytes(width: int = 8, height: int = 6) -> bytes:
    """A small, valid RGB JPEG file."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, format="JPEG")
    return out.getvalue()


def png_bytes(width: int = 8, height: int = 6) -> bytes:
    """A small, valid RGB PNG file."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 240)).save(out, format="PNG")
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but carries no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"")


def image_map(fmt: str, data: bytes) -> dict[str, Any]:
    """An image input of format ``fmt`` (jpeg or png) holding ``data``."""
    return {"kind": "image", "format": fmt, "data": data}


def deeply_nested_meta(depth: int) -> bytes:
    """A request whose meta is ``depth`` nested one-element arrays (built by hand:
    msgpack's own packer refuses such depth)."""
    head = pack({"v": 1, "id": "case-1", "inputs": {"x": tensor_map()}, "meta": None})
    return head[:-1] + b"\x91" * depth + b"\x00"


def _with_pair(envelope: dict[str, Any], key: str, value: object) -> bytes:
    """``envelope`` packed with one more pair at its end (which may repeat a key)."""
    packed = pack(envelope)
    if not 0x80 <= packed[0] < 0x8F:
        raise ValueError("a fixmap of at most 14 pairs is needed")
    return bytes([packed[0] + 1]) + packed[1:] + pack(key) + pack(value)


_CASES: list[tuple[str, Callable[[], bytes], type[DecodeError]]] = [
    ("empty message", lambda: b"", MalformedMessage),
    ("reserved msgpack byte", lambda: b"\xc1", MalformedMessage),
    ("truncated", lambda: pack(request_map())[:-5], MalformedMessage),
    ("trailing bytes", lambda: pack(request_map()) + b"\x00", MalformedMessage),
    ("invalid utf-8 string", lambda: b"\x81\xa1v\xa2\xff\xfe", MalformedMessage),
    ("integer map key", lambda: b"\x81\x01\x01", MalformedMessage),
    ("binary map key", lambda: pack({"v": 1, b"id": "case-1"}), MalformedMessage),
    ("duplicate map key", lambda: _with_pair(request_map(), "id", "case-2"), MalformedMessage),
    (
        "timestamp ext of 3 bytes in meta",
        # meta is the last value: nil, replaced by ext 8 of type -1 and length 3.
        lambda: pack(request_map(meta=None))[:-1] + b"\xc7\x03\xff\x00\x00\x00",
        MalformedMessage,
    ),
    ("nesting too deep", lambda: deeply_nested_meta(100_000), MalformedMessage),
    (
        "message too large",
        lambda: bytes(DEFAULT_LIMITS.max_message_bytes + 1),
        MessageTooLarge,
    ),
    ("not a map", lambda: pack([1, 2, 3]), InvalidField),
    ("missing version", lambda: pack(request_map(v=REMOVE)), MissingField),
    ("version 2", lambda: pack(request_map(v=2)), UnsupportedVersion),
    ("version as string", lambda: pack(request_map(v="1")), UnsupportedVersion),
    ("missing id", lambda: pack(request_map(id=REMOVE)), MissingField),
    ("id not a string", lambda: pack(request_map(id=42)), InvalidField),
    ("empty id", lambda: pack(request_map(id="")), InvalidField),
    ("id too long", lambda: pack(request_map(id="x" * 300)), IdTooLong),
    ("missing inputs", lambda: pack(request_map(inputs=REMOVE)), MissingField),
    ("inputs not a map", lambda: pack(request_map(inputs=[tensor_map()])), InvalidField),
    ("no inputs", lambda: pack(request_map(inputs={})), InvalidField),
    (
        "too many inputs",
        lambda: pack(request_map(inputs={f"x{i}": tensor_map() for i in range(17)})),
        TooManyInputs,
    ),
    ("input not a map", lambda: pack(request_map(inputs={"x": b"raw"})), InvalidField),
    (
        "unknown input kind",
        lambda: pack(request_map(inputs={"x": {"kind": "audio"}})),
        InvalidField,
    ),
    (
        "unknown dtype",
        lambda: pack(request_map(inputs={"x": tensor_map(dtype="complex64")})),
        UnsupportedDtype,
    ),
    (
        "missing dtype",
        lambda: pack(request_map(inputs={"x": tensor_map(dtype=REMOVE)})),
        MissingField,
    ),
    (
        "negative dimension",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[-2, -2])})),
        InvalidShape,
    ),
    (
        "float dimension",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[2.0, 2])})),
        InvalidShape,
    ),
    (
        "shape not an array",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=4)})),
        InvalidField,
    ),
    (
        "too many dims",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[1] * 9)})),
        TooManyDims,
    ),
    (
        "huge declared shape",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[1 << 40, 1 << 40])})),
        TooManyElements,
    ),
    (
        "huge dimension beside zero",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[0, (1 << 64) - 1])})),
        TooManyElements,
    ),
    (
        "empty, but its other dimensions overflow the strides",
        lambda: pack(request_map(inputs={"x": tensor_map(shape=[0, 10**6, 10**6, 10**6, 10**6])})),
        TooManyElements,
    ),
    (
        "wrong byte count",
        lambda: pack(request_map(inputs={"x": tensor_map(data=bytes(15))})),
        PayloadSizeMismatch,
    ),
    (
        "data as string",
        lambda: pack(request_map(inputs={"x": tensor_map(data="0" * 16)})),
        InvalidField,
    ),
    (
        "missing data",
        lambda: pack(request_map(inputs={"x": tensor_map(data=REMOVE)})),
        MissingField,
    ),
    (
        "bool byte not 0 or 1",
        lambda: pack(
            request_map(inputs={"x": tensor_map(dtype="bool", shape=[2], data=b"\x01\x02")})
        ),
        InvalidField,
    ),
    ("negative deadline", lambda: pack(request_map(deadline_ms=-1)), InvalidField),
    ("deadline as string", lambda: pack(request_map(deadline_ms="soon")), InvalidField),
    (
        "unsupported image format",
        lambda: pack(request_map(inputs={"x": image_map("gif", b"GIF89a")})),
        InvalidField,
    ),
    (
        "image bytes not an image",
        lambda: pack(request_map(inputs={"x": image_map("jpeg", b"\xff\xd8nope")})),
        InvalidImage,
    ),
    (
        "png claimed, jpeg sent",
        lambda: pack(request_map(inputs={"x": image_map("png", jpeg_bytes())})),
        InvalidImage,
    ),
    (
        "image header over the pixel limit",
        lambda: pack(request_map(inputs={"x": image_map("png", _png_header_only(9_000, 8_000))})),
        ImageTooLarge,
    ),
    (
        "image header a decompression bomb",
        lambda: pack(
            request_map(inputs={"x": image_map("png", _png_header_only(100_000, 100_000))})
        ),
        ImageTooLarge,
    ),
]


def malformed_corpus() -> list[MalformedCase]:
    """Every malformed case, built fresh (one of them is 16 MiB)."""
    return [MalformedCase(name, build(), error) for name, build, error in _CASES]


def synthetic_input(shape: Sequence[int], dtype: str, seed: int = 0) -> torch.Tensor:
    """A random tensor of wire dtype ``dtype``: floats in [0, 1), integers in [0, 128).

    uint8 covers [0, 256), like image pixels; bool is 0 or 1.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    generator = torch.Generator().manual_seed(seed)
    if torch_dtype.is_floating_point:
        return torch.rand(tuple(shape), generator=generator).to(torch_dtype)
    high = {torch.bool: 2, torch.uint8: 256}.get(torch_dtype, 128)
    return torch.randint(0, high, tuple(shape), generator=generator).to(torch_dtype)
