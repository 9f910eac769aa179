"""Encoded images (JPEG, PNG) as a first-class input kind."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from torchkafka.codecs._errors import EncodeError, ImageTooLarge, InvalidField, InvalidImage
from torchkafka.codecs._fields import required
from torchkafka.codecs._limits import Limits

IMAGE_KIND = "image"

#: Wire format name -> the name Pillow reports for it.
IMAGE_FORMATS = {"jpeg": "JPEG", "png": "PNG"}

#: Pillow's name of the pixel layout to decode into: RGB (3 channels) or L (grey, 1).
ImageMode = Literal["RGB", "L"]

#: The most pixels a complete file of each format holds per byte. A Huffman-coded JPEG
#: spends at least a bit on each 8x8 block (512); a PNG's deflate stream expands at
#: most 1032-fold, to at most 8 (one-bit) pixels a byte (8256). A header declaring more
#: than that belongs to a file that ends early. Arithmetic-coded JPEGs, which could
#: hold more, are held to the same bound.
MAX_PIXELS_PER_BYTE = {"jpeg": 512, "png": 8 * 1032}


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image still in its file format; its header has been checked against the limits."""

    format: str
    data: bytes
    width: int
    height: int


def image_to_wire(image: EncodedImage) -> dict[str, Any]:
    """The wire map ``{"kind": "image", "format", "data"}`` of ``image``."""
    return {"kind": IMAGE_KIND, "format": image.format, "data": image.data}


def image_from_wire(obj: dict[str, Any], limits: Limits) -> EncodedImage:
    """Check an image map's format and declared size without decoding its pixels.

    Error paths are relative to ``obj`` (see ``DecodeError.under``).
    """
    fmt = required(obj, "format", str, "")
    if fmt not in IMAGE_FORMATS:
        raise InvalidField(
            ".format", f"unsupported image format {fmt!r:.40}; use one of {sorted(IMAGE_FORMATS)}"
        )
    data = required(obj, "data", bytes, "")
    width, height = _header_size(data, fmt, ".data")
    if width * height > limits.max_image_pixels:
        raise ImageTooLarge(
            ".data", f"{width}x{height} pixels, the limit is {limits.max_image_pixels}"
        )
    image = EncodedImage(format=fmt, data=data, width=width, height=height)
    _check_length(image, ".data")
    return image


def encoded_image(data: bytes) -> EncodedImage:
    """Wrap JPEG or PNG file bytes, sniffing the format from the header."""
    for fmt in IMAGE_FORMATS:
        try:
            width, height = _header_size(data, fmt, "$")
        except InvalidImage:
            continue
        return EncodedImage(format=fmt, data=data, width=width, height=height)
    raise EncodeError("not a JPEG or PNG file")


def decode_image(image: EncodedImage, mode: ImageMode = "RGB") -> torch.Tensor:
    """Decode the pixels to uint8 (channels, height, width): a CHW view of HWC memory.

    A file that ends early raises ``InvalidImage`` rather than decoding padded:
    one too short for the pixels its header declares before anything is
    decoded, one whose data runs out in Pillow (this turns Pillow's
    process-wide ``LOAD_TRUNCATED_IMAGES`` off, whoever turned it on).

    Pillow decodes (libjpeg-turbo, libpng). torchvision.io's decoders were
    dropped after fuzzing this module crashed the process (SIGSEGV in
    decode_png) on a corrupted 16x16 PNG; a worker must survive any input.
    """
    _check_length(image, "$")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(image.data), formats=[IMAGE_FORMATS[image.format]]) as img:
            img.load()
            # np.array copies (torch warns on read-only arrays); convert would copy once more.
            pixels = np.array(img if img.mode == mode else img.convert(mode))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage("$", f"cannot decode {image.format}: {exc}") from exc
    hwc = torch.from_numpy(pixels)
    return hwc.unsqueeze(0) if hwc.dim() == 2 else hwc.permute(2, 0, 1)


def _check_length(image: EncodedImage, path: str) -> None:
    """Raise ``InvalidImage`` if ``image`` is too short to hold the pixels its header declares."""
    per_byte = MAX_PIXELS_PER_BYTE[image.format]
    if image.width * image.height > per_byte * len(image.data):
        raise InvalidImage(
            path,
            f"{image.width}x{image.height} pixels in {len(image.data)} bytes: a complete "
            f"{image.format} holds at most {per_byte} pixels a byte, so the file ends early",
        )


def _header_size(data: bytes, fmt: str, path: str) -> tuple[int, int]:
    """(width, height) from the file header; Pillow reads no pixels here."""
    try:
        with Image.open(io.BytesIO(data), formats=[IMAGE_FORMATS[fmt]]) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own bomb guard (the warning is raised only where warnings are errors).
        raise ImageTooLarge(path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(path, f"not {fmt} data") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(path, f"not a valid {fmt} header: {exc}") from exc
    return width, height
