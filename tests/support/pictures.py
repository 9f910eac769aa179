"""Image files for tests: varied pixels, so that a wrong decode cannot pass as right."""

from __future__ import annotations

import io

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
