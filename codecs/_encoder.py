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
from typing import Any

import msgpack
from typing_extensions import Buffer

from torchkafka.codecs._messages import Request, Result
from torchkafka.codecs._request import request_envelope
from torchkafka.codecs._result import result_envelope

_NIL = b"\xc0"
_EMPTY_BIN = b"\xc4\x00"


class Encoder:
    """Encodes messages with one reused msgpack packer; use one per thread."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def request(self, request: Request) -> bytes:
        """The wire bytes of ``request``."""
        return self._join(request_envelope(request), "inputs")

    def result(self, result: Result) -> bytes:
        """The wire bytes of ``result``."""
        return self._join(result_envelope(result), "outputs")

    def _join(self, envelope: dict[str, Any], named_key: str) -> bytes:
        """``envelope`` packed with ``envelope[named_key]`` (maps with ``data``) last."""
        pack = self._packer.pack
        named: dict[str, dict[str, Any]] = envelope.pop(named_key)
        envelope[named_key] = None
        # The envelope ends with the key, then nil: drop the nil, the map follows.
        parts: list[Buffer] = [pack(envelope)[:-1], self._packer.pack_map_header(len(named))]
        for name, item in named.items():
            payload = item["data"]
            item["data"] = b""
            # The item's map ends with "data" and an empty bin: drop that bin.
            parts += [pack(name), pack(item)[: -len(_EMPTY_BIN)], _bin_header(payload), payload]
        return b"".join(parts)


def _bin_header(payload: Buffer) -> bytes:
    size = memoryview(payload).nbytes
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
