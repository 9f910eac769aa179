"""Encoding requests and results to bytes, copying each payload exactly once.

Writers put every payload last: ``data`` is the last key of each tensor or
image map, and the named-inputs (or outputs) map is the last key of the
envelope. A message is then a run of small msgpack pieces, each followed by
one payload, and ``bytes.join`` assembles it with a single copy of each
payload; packing the whole envelope with msgpack would copy every payload
twice (into the packer's buffer, then into the returned bytes). Readers do not
depend on this order.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import torch
from typing_extensions import Buffer

from torchkafka.codecs._errors import EncodeError
from torchkafka.codecs._image import EncodedImage, image_to_wire
from torchkafka.codecs._messages import Input, Request, Result
from torchkafka.codecs._request import request_head
from torchkafka.codecs._result import result_head
from torchkafka.codecs._tensor import TENSOR_KIND, tensor_array

_EMPTY_BIN = b"\xc4\x00"
#: Tensor heads kept per encoder: a worker's outputs have a handful of names and shapes.
_HEADS_KEPT = 64


class Encoder:
    """Encodes messages with one reused msgpack packer; use one per thread.

    The bytes before a tensor's payload (its name, kind, dtype, shape and the
    payload's bin header) depend only on its name, dtype and shape; they are
    packed once and reused for the next tensor with the same three.
    """

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._tensor_heads: dict[tuple[Any, ...], bytes] = {}

    def request(self, request: Request) -> bytes:
        """The wire bytes of ``request``."""
        return self._join(request_head(request), "inputs", request.inputs)

    def result(self, result: Result) -> bytes:
        """The wire bytes of ``result``."""
        return self._join(result_head(result), "outputs", result.outputs)

    def _join(self, envelope: dict[str, Any], named_key: str, named: Mapping[str, Input]) -> bytes:
        """``envelope`` packed with ``named_key`` last, mapping to ``named``'s wire maps."""
        envelope[named_key] = None
        # The envelope ends with the key, then nil: drop the nil, the map follows.
        parts: list[Buffer] = [
            self._packer.pack(envelope)[:-1],
            self._packer.pack_map_header(len(named)),
        ]
        for name, value in named.items():
            if not isinstance(name, str) or not name:
                raise EncodeError(f"input names must be non-empty strings, got {name!r}")
            if isinstance(value, torch.Tensor):
                dtype, array = tensor_array(value)
                parts += (self._tensor_head(name, dtype, array.shape, array.nbytes), array.data)
            elif isinstance(value, EncodedImage):
                item = image_to_wire(value)
                payload = item.pop("data")
                parts += (self._item_head(name, item, memoryview(payload).nbytes), payload)
            else:
                raise EncodeError(
                    f"input {name!r} is a {type(value).__name__}, not a tensor or image"
                )
        return b"".join(parts)

    def _tensor_head(self, name: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
        key = (name, dtype, *shape)
        head = self._tensor_heads.get(key)
        if head is None:
            if len(self._tensor_heads) >= _HEADS_KEPT:
                self._tensor_heads.clear()
            item = {"kind": TENSOR_KIND, "dtype": dtype, "shape": list(shape)}
            head = self._tensor_heads[key] = self._item_head(name, item, nbytes)
        return head

    def _item_head(self, name: str, item: dict[str, Any], nbytes: int) -> bytes:
        """The bytes of ``name`` and ``item`` (a wire map, no ``data``) up to the payload."""
        item["data"] = b""
        packed_name: bytes = self._packer.pack(name)
        # The item's map ends with "data" and an empty bin: drop that bin.
        packed_item: bytes = self._packer.pack(item)[: -len(_EMPTY_BIN)]
        return packed_name + packed_item + _bin_header(nbytes)


def _bin_header(size: int) -> bytes:
    if size < 1 << 8:
        return struct.pack(">BB", 0xC4, size)
    if size < 1 << 16:
        return struct.pack(">BH", 0xC5, size)
    return struct.pack(">BI", 0xC6, size)


_local = threading.local()


def _thread_encoder() -> Encoder:
    encoder: Encoder | None = getattr(_local, "encoder", None)
    if encoder is None:
        encoder = _local.encoder = Encoder()
    return encoder


def encode_request(request: Request) -> bytes:
    """The wire bytes of ``request``, using this thread's ``Encoder``."""
    return _thread_encoder().request(request)


def encode_result(result: Result) -> bytes:
    """The wire bytes of ``result``, using this thread's ``Encoder``."""
    return _thread_encoder().result(result)
