"""Decoding copies a tensor's payload once (msgpack's copy) and never again."""

import tracemalloc
from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from torchkafka.codecs import Request, decode_request, encode_request

PAYLOAD_BYTES = 4 << 20


def address_of(data: bytes) -> int:
    return int(np.frombuffer(data, dtype=np.uint8).ctypes.data)


def test_decoded_tensor_views_the_bytes_msgpack_produced(monkeypatch: pytest.MonkeyPatch) -> None:
    unpacked: list[dict[str, Any]] = []
    real_unpackb = msgpack.unpackb

    def spying_unpackb(data: bytes, **options: Any) -> Any:
        value = real_unpackb(data, **options)
        unpacked.append(value)
        return value

    monkeypatch.setattr(msgpack, "unpackb", spying_unpackb)
    tensor = torch.randn(1024, 1024)
    decoded = decode_request(encode_request(Request(id="z", inputs={"x": tensor}))).inputs["x"]
    assert isinstance(decoded, torch.Tensor)
    payload = unpacked[0]["inputs"]["x"]["data"]
    assert decoded.data_ptr() == address_of(payload)
    assert torch.equal(decoded, tensor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8, torch.bool])
def test_decoding_allocates_about_one_payload(dtype: torch.dtype) -> None:
    numel = PAYLOAD_BYTES // dtype.itemsize
    message = encode_request(Request(id="z", inputs={"x": torch.zeros(numel, dtype=dtype)}))
    decode_request(message)  # warm caches and one-time warnings
    tracemalloc.start()
    try:
        decoded = decode_request(message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tensor = decoded.inputs["x"]
    assert isinstance(tensor, torch.Tensor)
    assert tensor.shape == (numel,)
    assert PAYLOAD_BYTES <= peak < PAYLOAD_BYTES * 1.05
