"""No input makes the decoder raise anything but a DecodeError."""

import contextlib
import random

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchkafka.codecs import (
    DecodeError,
    EncodedImage,
    InvalidImage,
    Limits,
    Request,
    decode_image,
    decode_request,
    encode_request,
    encoded_image,
)
from torchkafka.codecs.testing import jpeg_bytes, malformed_corpus, png_bytes

# Small limits keep a mutated header from asking for a large (if legal) allocation.
LIMITS = Limits(max_message_bytes=1 << 16, max_elements=1 << 14, max_image_pixels=1 << 12)


def decode_fully(data: bytes) -> None:
    """decode_request, then decode any image: only DecodeErrors may escape."""
    try:
        request = decode_request(data, LIMITS)
    except DecodeError:
        return
    for value in request.inputs.values():
        if isinstance(value, EncodedImage):
            with contextlib.suppress(InvalidImage):
                decode_image(value)


def seed_messages() -> list[bytes]:
    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.tensor([True, False]),
        "c": torch.tensor(7, dtype=torch.int64),
        "d": torch.ones(2, 2, dtype=torch.bfloat16),
    }
    return [
        encode_request(
            Request(id="seed-1", inputs=tensors, meta={"k": [1, 2.5, None]}, deadline_ms=9)
        ),
        encode_request(Request(id="seed-2", inputs={"img": encoded_image(jpeg_bytes(16, 16))})),
        encode_request(Request(id="seed-3", inputs={"img": encoded_image(png_bytes(16, 16))})),
        *(case.data for case in malformed_corpus() if len(case.data) < LIMITS.max_message_bytes),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 4:
            del buf[pos:]
        else:
            buf[pos:pos] = bytes(
                [rng.choice([0xC4, 0xC5, 0xC6, 0xDC, 0xDD, 0xDE, 0xDF, 0xCF, 0xD3])]
            )
    return bytes(buf)


@pytest.mark.slow
def test_100k_mutated_and_random_inputs_raise_only_decode_errors() -> None:
    rng = random.Random(20261129)
    seeds = seed_messages()
    for _ in range(100_000):
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randint(0, 64))
        else:
            data = mutate(rng.choice(seeds), rng)
        decode_fully(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=24)
    | st.sampled_from(["tensor", "image", "float32", "bool", "jpeg", "png"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "id", "inputs", "kind", "dtype", "shape", "data", "format", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=2000, deadline=None)
@given(value=msgpack_values)
def test_arbitrary_msgpack_structures_raise_only_decode_errors(value: object) -> None:
    decode_fully(msgpack.packb(value, use_bin_type=True))
