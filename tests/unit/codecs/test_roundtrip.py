"""Requests and results survive encode -> decode for every dtype and shape."""

from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchkafka.codecs import (
    DTYPES,
    EncodedImage,
    EncodeError,
    Encoder,
    InvalidImage,
    ModelInfo,
    Request,
    Result,
    decode_image,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
    encoded_image,
)
from torchkafka.codecs.testing import jpeg_bytes, png_bytes

shapes = st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=4)
meta_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def random_tensor(dtype_name: str, shape: list[int], seed: int) -> torch.Tensor:
    """Arbitrary bit patterns (NaNs included) of the dtype, valid bools only."""
    generator = np.random.default_rng(seed)
    dtype = DTYPES[dtype_name]
    numel = int(np.prod(shape)) if shape else 1
    if dtype is torch.bool:
        return torch.from_numpy(generator.integers(0, 2, numel).astype(np.bool_)).reshape(shape)
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    raw = generator.integers(0, 256, numel * dtype.itemsize, dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def raw_bytes(tensor: torch.Tensor) -> bytes:
    if tensor.numel() == 0:
        return b""
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def same_bits(left: torch.Tensor, right: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN payloads included)."""
    return (
        left.dtype == right.dtype
        and left.shape == right.shape
        and raw_bytes(left) == raw_bytes(right)
    )


@settings(max_examples=300, deadline=None)
@given(
    tensors=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.tuples(st.sampled_from(sorted(DTYPES)), shapes, st.integers(0, 2**32)),
        min_size=1,
        max_size=4,
    ),
    request_id=st.text(min_size=1, max_size=40),
    meta=meta_values,
    deadline_ms=st.none() | st.integers(0, 2**63 - 1),
)
def test_request_round_trip(
    tensors: dict[str, tuple[str, list[int], int]],
    request_id: str,
    meta: Any,
    deadline_ms: int | None,
) -> None:
    inputs = {name: random_tensor(*spec) for name, spec in tensors.items()}
    request = Request(id=request_id, inputs=inputs, meta=meta, deadline_ms=deadline_ms)
    decoded = decode_request(encode_request(request))
    assert decoded.id == request_id
    assert decoded.meta == meta
    assert decoded.deadline_ms == deadline_ms
    assert decoded.inputs.keys() == inputs.keys()
    for name, tensor in inputs.items():
        got = decoded.inputs[name]
        assert isinstance(got, torch.Tensor)
        assert same_bits(got, tensor), name


@settings(max_examples=100, deadline=None)
@given(dtype_name=st.sampled_from(sorted(DTYPES)), shape=shapes, seed=st.integers(0, 2**32))
def test_result_round_trip(dtype_name: str, shape: list[int], seed: int) -> None:
    output = random_tensor(dtype_name, shape, seed)
    result = Result(
        id="r-1",
        outputs={"y": output},
        model=ModelInfo(name="resnet18", version="3"),
        timings_ms={"infer_ms": 1.25, "total_ms": 4},
        meta={"trace": "abc"},
        worker="host-1/7",
    )
    decoded = decode_result(encode_result(result))
    assert same_bits(decoded.outputs["y"], output)
    assert (decoded.id, decoded.model, decoded.meta, decoded.worker) == (
        "r-1",
        ModelInfo("resnet18", "3"),
        {"trace": "abc"},
        "host-1/7",
    )
    assert decoded.timings_ms == {"infer_ms": 1.25, "total_ms": 4.0}


def test_encoder_output_equals_plain_msgpack_of_the_same_map() -> None:
    """The payload-last assembly is ordinary msgpack, byte for byte."""
    tensor = torch.arange(70_000, dtype=torch.int32)
    request = Request(id="x", inputs={"a": tensor, "b": tensor[:3]}, meta=[1, "two"])
    reference = {
        "v": 1,
        "id": "x",
        "meta": [1, "two"],
        "inputs": {
            name: {
                "kind": "tensor",
                "dtype": "int32",
                "shape": list(t.shape),
                "data": t.numpy().tobytes(),
            }
            for name, t in (("a", tensor), ("b", tensor[:3]))
        },
    }
    assert Encoder().request(request) == msgpack.packb(reference, use_bin_type=True)


def test_non_contiguous_and_grad_tensors_encode_their_values() -> None:
    base = torch.arange(12, dtype=torch.float32, requires_grad=True).reshape(3, 4)
    transposed = base.t()
    decoded = decode_request(encode_request(Request(id="t", inputs={"x": transposed})))
    got = decoded.inputs["x"]
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, transposed.detach())


def test_encoding_rejects_what_the_wire_cannot_carry() -> None:
    with pytest.raises(EncodeError, match="complex64"):
        encode_request(Request(id="c", inputs={"x": torch.zeros(2, dtype=torch.complex64)}))
    with pytest.raises(EncodeError, match="non-empty"):
        encode_request(Request(id="", inputs={"x": torch.zeros(1)}))
    with pytest.raises(EncodeError, match="no inputs"):
        encode_request(Request(id="e", inputs={}))
    with pytest.raises(EncodeError, match="not a tensor or image"):
        encode_request(Request(id="l", inputs={"x": [1, 2]}))  # type: ignore[dict-item]


@pytest.mark.parametrize(("fmt", "data"), [("jpeg", jpeg_bytes()), ("png", png_bytes())])
def test_images_travel_encoded_and_decode_to_chw_uint8(fmt: str, data: bytes) -> None:
    request = Request(id="img", inputs={"photo": encoded_image(data)})
    decoded = decode_request(encode_request(request)).inputs["photo"]
    assert isinstance(decoded, EncodedImage)
    assert (decoded.format, decoded.width, decoded.height, decoded.data) == (fmt, 8, 6, data)
    pixels = decode_image(decoded)
    assert pixels.dtype == torch.uint8
    assert pixels.shape == (3, 6, 8)


def test_png_pixels_are_exact() -> None:
    pixels = decode_image(encoded_image(png_bytes()))
    assert torch.equal(pixels[:, 0, 0], torch.tensor([10, 120, 240], dtype=torch.uint8))


def test_corrupt_image_pixels_raise_invalid_image() -> None:
    data = jpeg_bytes(64, 64)
    truncated = EncodedImage(format="jpeg", data=data[: len(data) // 2], width=64, height=64)
    with pytest.raises(InvalidImage, match=r"cannot decode jpeg: .*[Tt]runcated"):
        decode_image(truncated)
