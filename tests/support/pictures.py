"""Image files for tests: varied pixels, so that a wrong decode cannot pass as right."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image


def picture(fmt: str, width: int, height: int, seed: int) -> bytes:
    """A ``fmt`` ("jpeg" or "png") RGB file of smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 200, width)[None, :, None]
    y = np.linspace(0, 200, height)[:, None, None]
    pixels = (x + y * rng.random(3) + rng.integers(0, 40, (height, width, 3))) % 256
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format=fmt.upper())
    return out.getvalue()


def truncated_jpeg(data: bytes) -> bytes:
    """JPEG ``data`` cut a few bytes into its scan: the header reads, the pixels do not decode."""
    return data[: data.index(b"\xff\xda") + 32]


def pillow_pixels(data: bytes) -> torch.Tensor:
    """The (3, height, width) uint8 pixels Pillow decodes ``data`` to: the reference."""
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


def declaring(data: bytes, width: int, height: int) -> bytes:
    """JPEG ``data`` whose header declares ``width`` x ``height``: its scan ends (at its end
    marker, cleanly) long before that many pixels."""
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def truncated_png(data: bytes) -> bytes:
    """PNG ``data`` with its first IDAT chunk cut in half, then closed by an IEND chunk."""
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = data[start + 8 : start + 8 + length // 2]
    return data[:start] + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def short_png(width: int, height: int) -> bytes:
    """An RGB PNG declaring ``width`` x ``height`` whose (complete) deflate stream holds one row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(bytes(1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        png_chunk(kind, body) for kind, body in [(b"IHDR", ihdr), (b"IDAT", row), (b"IEND", b"")]
    )


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
