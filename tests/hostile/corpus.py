"""Hostile inputs for a running worker, each named, with the outcome it must get.

Most get one dead letter with a reason; a few are plain data the worker must
answer (a string that looks like code is a string; a pickle stream in a tensor
is bytes), and a re-sent id gets nothing. The codecs' own malformed corpus
comes first, then what only a whole worker meets: records that are null,
compressed, oversized or carry unreadable or huge headers, image bombs, inputs
the model cannot take or that fail later (in the model, the producer), and
attempts to get code run. Each case is built only when it is sent: some are large.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import torch

from tests.support.pictures import declaring, picture, short_png, truncated_jpeg, truncated_png
from tests.support.worker_models import POISON
from torchkafka.codecs import MAX_MESSAGE_BYTES, Reason
from torchkafka.codecs.testing import (
    deeply_nested_meta,
    image_map,
    jpeg_bytes,
    malformed_corpus,
    pack,
    request_map,
    tensor_map,
)
from torchkafka.worker import WorkerReason

MiB = 1 << 20
#: What a case gets instead of a dead letter: a result, or nothing at all.
RESULT = "result"
NOTHING = "nothing"
#: The worker producer's message.max.bytes in this suite: below the worker's own
#: message limit, so that a request it accepts can have a result too large to publish.
PRODUCER_MAX_BYTES = 4 * MiB


@dataclass(frozen=True)
class Hostile:
    """One record to send: its value, key and headers, and how to send it."""

    value: bytes | None
    key: bytes | None = b"hostile"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: The producer's compression.type for this record.
    compression: str = "none"
    #: A header key that is not UTF-8 (confluent-kafka cannot write one; kcat can).
    raw_header_key: bytes | None = None


@dataclass(frozen=True)
class Case:
    """A named hostile record and what it must get: a dead-letter reason, RESULT or NOTHING."""

    name: str
    expected: str
    build: Callable[[], Hostile]


class Exploit:
    """Unpickling this runs a shell command that creates ``marker``: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def valid(request_id: str, n: int = 0, **fields: object) -> bytes:
    """A valid request for the suite's model (x: float32 [4], n + 0..3), fields added."""
    x = torch.arange(n, n + 4, dtype=torch.float32).numpy().tobytes()
    return pack(request_map(id=request_id, inputs={"x": tensor_map(shape=[4], data=x)}, **fields))


def with_x(request_id: str, x: object) -> bytes:
    """A request whose input x is ``x``."""
    return pack(request_map(id=request_id, inputs={"x": x}))


def codec_cases() -> list[Case]:
    """The codecs' malformed corpus: one dead letter each, with its reason."""
    return [Case(f"codec: {c.name}", c.error.reason, _constant(c.data)) for c in malformed_corpus()]


def worker_cases(marker: Path) -> list[Case]:
    """What only a whole worker meets; ``marker`` is the file a code execution would create."""
    exploit = pickle.dumps(Exploit(marker))
    over = MAX_MESSAGE_BYTES + 1
    return [
        # Records the codec never sees as it expects.
        Case("null value (tombstone)", Reason.MALFORMED_MSGPACK, lambda: Hostile(None)),
        Case("no key", Reason.MALFORMED_MSGPACK, lambda: Hostile(b"\xc1", key=None)),
        Case(
            "header key not UTF-8",
            WorkerReason.INVALID_HEADERS,
            lambda: Hostile(valid("hostile-header-key"), raw_header_key=b"\xff\xfe"),
        ),
        Case(
            "10,000 headers",
            RESULT,
            lambda: Hostile(
                valid("hostile-headers"), headers=[(f"h{i}", b"v") for i in range(10_000)]
            ),
        ),
        # Sizes.
        Case(
            f"value of {over:,} bytes, over the worker's limit",
            Reason.MESSAGE_TOO_LARGE,
            lambda: Hostile(bytes(over)),
        ),
        Case(
            "gzip record inflating to 64 MiB",
            Reason.MESSAGE_TOO_LARGE,
            lambda: Hostile(bytes(64 * MiB), compression="gzip"),
        ),
        Case(
            "zstd record inflating to 24 MiB",
            Reason.MESSAGE_TOO_LARGE,
            lambda: Hostile(bytes(24 * MiB), compression="zstd"),
        ),
        Case(
            "5 MiB header, malformed value",
            Reason.MALFORMED_MSGPACK,
            lambda: Hostile(b"\xc1", headers=[("big", bytes(5 * MiB))]),
        ),
        Case(
            "5 MiB key: the result is too large",
            WorkerReason.RESULT_TOO_LARGE,
            lambda: Hostile(valid("hostile-big-key"), key=bytes(5 * MiB)),
        ),
        Case(
            "5 MiB meta: the result echoing it is too large",
            WorkerReason.RESULT_TOO_LARGE,
            lambda: Hostile(valid("hostile-big-meta", meta={"pad": bytes(5 * MiB)})),
        ),
        Case(
            "1 MiB version string, quoted by the error",
            Reason.UNSUPPORTED_VERSION,
            lambda: Hostile(pack(request_map(v="v" * MiB))),
        ),
        # msgpack that declares more than it holds, or nests too deep.
        Case(
            "meta nested 10,000 deep",
            Reason.MALFORMED_MSGPACK,
            _constant(deeply_nested_meta(10_000)),
        ),
        Case(
            "array declaring 2^32-1 items in 5 bytes",
            Reason.MALFORMED_MSGPACK,
            _constant(b"\xdd\xff\xff\xff\xff"),
        ),
        Case(
            "map declaring 2^32-1 pairs in 5 bytes",
            Reason.MALFORMED_MSGPACK,
            _constant(b"\xdf\xff\xff\xff\xff"),
        ),
        Case(
            "tensor data declaring 4 GiB in 16 bytes",
            Reason.MALFORMED_MSGPACK,
            # The request ends with its data: bin 8, 16 bytes. Declare bin 32 of 2^32-1.
            lambda: Hostile(valid("hostile-bin32")[:-18] + b"\xc6\xff\xff\xff\xff" + bytes(16)),
        ),
        Case("one ext value as the request", Reason.INVALID_FIELD, _constant(b"\xd4\x01\x00")),
        # Tensors.
        Case(
            "no elements, two dimensions of 2^40",
            Reason.TOO_MANY_ELEMENTS,
            lambda: Hostile(with_x("hostile-empty", tensor_map(shape=[0, 1 << 40, 1 << 40]))),
        ),
        Case(
            "dtype 'object'",
            Reason.UNSUPPORTED_DTYPE,
            lambda: Hostile(with_x("hostile-object", tensor_map(dtype="object"))),
        ),
        Case(
            "data as msgpack ext type 42",
            Reason.INVALID_FIELD,
            lambda: Hostile(with_x("hostile-ext", tensor_map(data=msgpack.ExtType(42, bytes(16))))),
        ),
        # Images: bombs are refused by their header. Cut files pass the header checks, and this
        # worker's model takes float32, not uint8 pixels: they are refused before any decoding
        # (the decoder pool's refusal of them: tests/integration/test_worker.py).
        Case(
            "PNG of 300 bytes declaring 20,000 x 20,000",
            Reason.IMAGE_TOO_LARGE,
            lambda: _image("hostile-png-bomb", "png", short_png(20_000, 20_000)),
        ),
        Case(
            "PNG of 300 bytes declaring 8,000 x 8,000",
            Reason.INVALID_IMAGE,
            lambda: _image("hostile-png-short", "png", short_png(8_000, 8_000)),
        ),
        Case(
            "JPEG of 600 bytes declaring 8,192 x 8,192",
            Reason.INVALID_IMAGE,
            lambda: _image("hostile-jpeg-short", "jpeg", declaring(jpeg_bytes(), 8192, 8192)),
        ),
        Case(
            "JPEG declaring 65,535 x 65,535",
            Reason.IMAGE_TOO_LARGE,
            lambda: _image("hostile-jpeg-bomb", "jpeg", declaring(jpeg_bytes(), 65535, 65535)),
        ),
        Case(
            "truncated JPEG",
            Reason.UNSUPPORTED_DTYPE,
            lambda: _image("hostile-jpeg-cut", "jpeg", truncated_jpeg(picture("jpeg", 64, 48, 1))),
        ),
        Case(
            "truncated PNG",
            Reason.UNSUPPORTED_DTYPE,
            lambda: _image("hostile-png-cut", "png", truncated_png(picture("png", 64, 48, 2))),
        ),
        # Failures after decoding.
        Case(
            "a row that makes the model raise",
            WorkerReason.MODEL_ERROR,
            lambda: Hostile(with_x("hostile-poison", tensor_map(shape=[4], data=_poison()))),
        ),
        Case(
            "deadline in 1970",
            WorkerReason.EXPIRED,
            _constant(valid("hostile-late", deadline_ms=1)),
        ),
        Case(
            "no input named x",
            WorkerReason.UNUSABLE_INPUT,
            _constant(pack(request_map(id="hostile-no-x", inputs={"y": tensor_map()}))),
        ),
        # Code execution: data stays data.
        Case("a pickle stream as the value", Reason.MALFORMED_MSGPACK, _constant(exploit)),
        Case(
            "a pickle stream as the inputs",
            Reason.INVALID_FIELD,
            _constant(pack(request_map(id="hostile-pickle-inputs", inputs=exploit))),
        ),
        Case(
            "a pickle stream as a tensor beside x",
            RESULT,
            lambda: Hostile(_beside_x("hostile-pickle-tensor", exploit)),
        ),
        Case(
            "input kind 'python:os:system'",
            Reason.INVALID_FIELD,
            lambda: Hostile(with_x("hostile-kind", {"kind": "python:os:system", "data": exploit})),
        ),
        Case(
            "dtype 'python:builtins.eval'",
            Reason.UNSUPPORTED_DTYPE,
            lambda: Hostile(with_x("hostile-dtype", tensor_map(dtype="python:builtins.eval"))),
        ),
        Case(
            "id and meta that look like code",
            RESULT,
            lambda: Hostile(
                valid(
                    f"python:os:system:touch {marker}",
                    meta={"model": "torchscript:/tmp/x.pt", "__reduce__": exploit, "eval": "1+1"},
                )
            ),
        ),
        Case(
            "a timestamp ext in meta, echoed",
            RESULT,
            _constant(valid("hostile-ext-meta", meta=msgpack.Timestamp(1, 2))),
        ),
    ]


def cases(marker: Path, valid_request: Callable[[int], Hostile]) -> list[Case]:
    """Every case, in the order they are sent; after case n the suite sends
    ``valid_request(n)``, which case "a done id sent again" repeats."""
    listed = [*codec_cases(), *worker_cases(marker)]
    before = len(listed) - 1
    listed.append(Case("a done id sent again", NOTHING, lambda: valid_request(before)))
    # Last, so that a worker it stops has met every other case: librdkafka cannot
    # decompress this batch (zstd stops at receive.message.max.bytes) and reports an
    # error at its offset instead of a record.
    listed.append(
        Case(
            "zstd record inflating to 256 MiB, over receive.message.max.bytes",
            "unreadable_record",
            lambda: Hostile(bytes(256 * MiB), compression="zstd"),
        )
    )
    return listed


def _constant(value: bytes) -> Callable[[], Hostile]:
    return lambda: Hostile(value)


def _image(request_id: str, fmt: str, data: bytes) -> Hostile:
    return Hostile(with_x(request_id, image_map(fmt, data)))


def _beside_x(request_id: str, data: bytes) -> bytes:
    """A valid request with a second input, a uint8 tensor of ``data`` the model never reads."""
    envelope = msgpack.unpackb(valid(request_id))
    envelope["inputs"]["payload"] = tensor_map(dtype="uint8", shape=[len(data)], data=data)
    return pack(envelope)


def _poison() -> bytes:
    return torch.tensor([POISON, 0, 0, 0], dtype=torch.float32).numpy().tobytes()
