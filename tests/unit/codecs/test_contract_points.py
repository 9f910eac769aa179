"""What docs/wire-format.md says of the points a client cannot guess: which reason a value
gets that is not a map, lacks ``kind`` or has nil where a field is required, what of
``meta`` comes back in the result, and what tensor an image decodes to."""

import io

import msgpack
import numpy as np
import pytest
import torch
from PIL import Image

from torchkafka.codecs import (
    DecodeError,
    EncodedImage,
    ModelInfo,
    Reason,
    Result,
    decode_image,
    decode_request,
    decode_result,
    encode_result,
    encoded_image,
)
from torchkafka.codecs.testing import REMOVE, image_map, pack, png_bytes, request_map, tensor_map


def reason_and_error(data: bytes) -> tuple[Reason, str]:
    with pytest.raises(DecodeError) as caught:
        decode_request(data)
    return caught.value.reason, str(caught.value)


@pytest.mark.parametrize(
    ("value", "kind"), [([1], "an array"), ("v", "a string"), (None, "nil"), (1, "an integer")]
)
def test_a_value_that_is_not_a_map_is_an_invalid_field(value: object, kind: str) -> None:
    assert reason_and_error(pack(value)) == (Reason.INVALID_FIELD, f"$: expected a map, got {kind}")


def test_an_input_without_kind_lacks_a_required_field() -> None:
    x = tensor_map(kind=REMOVE)
    assert reason_and_error(pack(request_map(inputs={"x": x}))) == (
        Reason.MISSING_FIELD,
        "$.inputs['x'].kind: required field is missing",
    )


@pytest.mark.parametrize(
    ("path", "envelope"),
    [
        ("$.v", request_map(v=None)),
        ("$.id", request_map(id=None)),
        ("$.inputs", request_map(inputs=None)),
        ("$.inputs['x'].kind", request_map(inputs={"x": tensor_map(kind=None)})),
        ("$.inputs['x'].dtype", request_map(inputs={"x": tensor_map(dtype=None)})),
        ("$.inputs['x'].shape", request_map(inputs={"x": tensor_map(shape=None)})),
        ("$.inputs['x'].data", request_map(inputs={"x": tensor_map(data=None)})),
        (
            "$.inputs['x'].format",
            request_map(inputs={"x": {**image_map("png", b""), "format": None}}),
        ),
        ("$.inputs['x'].data", request_map(inputs={"x": image_map("png", None)})),  # type: ignore[arg-type]
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_nil_in_a_required_field_is_a_missing_field(path: str, envelope: dict[str, object]) -> None:
    assert reason_and_error(pack(envelope)) == (
        Reason.MISSING_FIELD,
        f"{path}: required field is missing",
    )


def test_nil_in_an_optional_field_is_not_given() -> None:
    request = decode_request(pack(request_map(meta=None, deadline_ms=None)))
    assert (request.meta, request.deadline_ms) == (None, None)


def echoed(meta_bytes: bytes) -> bytes:
    """The bytes of the meta a result echoes for a request whose meta is ``meta_bytes``."""
    request = decode_request(pack(request_map(meta=None))[:-1] + meta_bytes)  # meta comes last
    result = Result("r", {"y": torch.zeros(1)}, ModelInfo("m", "1"), meta=request.meta)
    packed: bytes = msgpack.packb(request.meta, use_bin_type=True)
    assert packed in encode_result(result)
    assert decode_result(encode_result(result)).meta == request.meta
    return packed


def test_meta_is_echoed_as_the_same_value_each_part_in_its_smallest_form() -> None:
    meta = (
        b"\x86"  # a map of 6, its keys in this order
        + b"\xa1f\xca\x3f\xc0\x00\x00"  # float32 1.5
        + b"\xa1i\xcf" + (1).to_bytes(8, "big")  # uint64 1
        + b"\xa1s\xd9\x01a"  # str 8 "a"
        + b"\xa1b\xc5\x00\x01z"  # bin 16 b"z"
        + b"\xa1t\xc7\x0c\xff" + bytes(4) + (1).to_bytes(8, "big")  # timestamp 96: 1 s
        + b"\xa1e\xc7\x03\x05abc"  # ext 8, type 5, 3 bytes
    )  # fmt: skip
    assert echoed(meta) == (
        b"\x86"
        + b"\xa1f\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"  # float64 1.5
        + b"\xa1i\x01"  # positive fixint 1
        + b"\xa1s\xa1a"  # fixstr "a"
        + b"\xa1b\xc4\x01z"  # bin 8 b"z"
        + b"\xa1t\xd6\xff\x00\x00\x00\x01"  # timestamp 32: the same instant
        + b"\xa1e\xc7\x03\x05abc"  # the ext value unchanged
    )  # fmt: skip


@pytest.mark.parametrize("code", [0, 5, 127])
def test_meta_may_hold_ext_values_of_the_application_types(code: int) -> None:
    meta = pack(msgpack.ExtType(code, b"\x00\x01"))
    assert echoed(meta) == meta


@pytest.mark.parametrize("code", [-128, -2])
def test_ext_types_msgpack_reserves_are_malformed(code: int) -> None:
    data = (
        pack(request_map(meta=None))[:-1]
        + b"\xd5"
        + code.to_bytes(1, "big", signed=True)
        + bytes(2)
    )
    assert reason_and_error(data) == (
        Reason.MALFORMED_MSGPACK,
        "$: reserved ext type: types -128 to -2 are msgpack's, for types not defined yet",
    )


def test_an_image_without_pixels_in_meta_is_just_data() -> None:
    """meta is opaque: a map that looks like an input there is not decoded or checked."""
    meta = {"x": image_map("png", png_bytes()[:10]), "kind": "python:os:system"}
    assert echoed(pack(meta)) == pack(meta)


def test_a_result_has_no_meta_when_its_request_had_none() -> None:
    result = Result("r", {"y": torch.zeros(1)}, ModelInfo("m", "1"))
    assert "meta" not in msgpack.unpackb(encode_result(result))


def png(image: Image.Image) -> EncodedImage:
    file = io.BytesIO()
    image.save(file, "PNG")
    return encoded_image(file.getvalue())


def test_an_image_decodes_to_uint8_rgb_channels_first_at_its_own_size() -> None:
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)  # height 5, width 7
    pixels[1, 2] = (10, 20, 30)
    decoded = decode_image(png(Image.fromarray(pixels)))
    assert (decoded.dtype, tuple(decoded.shape)) == (torch.uint8, (3, 5, 7))
    assert decoded[:, 1, 2].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    ("image", "rgb"),
    [
        (Image.new("L", (4, 3), 7), [7, 7, 7]),
        (Image.new("RGBA", (4, 3), (200, 100, 50, 0)), [200, 100, 50]),  # alpha dropped
        (Image.fromarray(np.full((3, 4), 1000, dtype=np.uint16)), [255, 255, 255]),  # clipped
        (Image.new("P", (4, 3), 0), [0, 0, 0]),
    ],
    ids=["grey", "rgba", "16-bit", "palette"],
)
def test_other_image_modes_become_rgb(image: Image.Image, rgb: list[int]) -> None:
    decoded = decode_image(png(image))
    assert tuple(decoded.shape) == (3, 3, 4)
    assert decoded[:, 0, 0].tolist() == rgb


@pytest.mark.parametrize(
    "one", [b"\x01", b"\xcc\x01", b"\xcd\x00\x01", b"\xd3" + bytes(7) + b"\x01"]
)
def test_an_integer_of_any_width_is_read(one: bytes) -> None:
    """``v`` = 1 as a fixint, uint8, uint16 and int64: a writer need not use the smallest form."""
    shortest = pack(request_map())
    assert shortest[:4] == b"\x83\xa1v\x01"  # {"v": 1, ...}: the map's first pair
    assert decode_request(shortest[:3] + one + shortest[4:]).id == "case-1"


def test_an_empty_input_name_is_said_to_be_empty() -> None:
    assert reason_and_error(pack(request_map(inputs={"": tensor_map()}))) == (
        Reason.INVALID_FIELD,
        "$.inputs: names must be non-empty strings, got an empty string",
    )


def test_an_empty_tensor_carries_an_empty_bin_and_nil_data_is_missing() -> None:
    empty = decode_request(pack(request_map(inputs={"x": tensor_map(shape=[0], data=b"")})))
    tensor = empty.inputs["x"]
    assert isinstance(tensor, torch.Tensor)
    assert tensor.numel() == 0
    nil = pack(request_map(inputs={"x": tensor_map(shape=[0], data=None)}))
    assert reason_and_error(nil)[0] == Reason.MISSING_FIELD
