"""Calibration data for int8 quantization: raw input rows from a file or a folder.

Rows are raw model inputs, as requests carry them (not yet preprocessed):
the caller preprocesses and batches them like live traffic, so the measured
activation ranges are those the model will see.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchkafka.codecs import DecodeError, EncodeError, decode_image, encoded_image
from torchkafka.worker._errors import StartupError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def load_calibration(path: Path) -> list[torch.Tensor]:
    """The rows in ``path``: a ``.pt`` file or a folder of JPEG/PNG images.

    A ``.pt`` file holds one tensor ``[N, ...]`` (loaded with
    ``weights_only=True``); its N rows are returned. A folder's images
    (``*.jpg``, ``*.jpeg``, ``*.png``, in name order) decode as live image
    requests do, to uint8 RGB ``[3, height, width]``; they must all have
    one size (nothing is resized). Every problem is a ``StartupError``.
    """
    if path.is_dir():
        rows = _images(path)
    elif path.is_file() and path.suffix == ".pt":
        rows = _tensor_rows(path)
    else:
        raise StartupError(
            f"calibration data {path} is neither a .pt file nor a folder of JPEG/PNG images"
        )
    if not rows:
        raise StartupError(f"calibration data {path} holds no inputs")
    return rows


def _tensor_rows(path: Path) -> list[torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused objects, others for bad files
        raise StartupError(
            f"cannot load calibration tensor {path} (weights_only=True): {exc}"
        ) from exc
    if not isinstance(data, torch.Tensor) or data.dim() < 1:
        shown = "a 0-d tensor" if isinstance(data, torch.Tensor) else type(data).__name__
        raise StartupError(f"calibration file {path} must hold one tensor [N, ...], not {shown}")
    return list(data.unbind(0))


def _images(folder: Path) -> list[torch.Tensor]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = [_image(file) for file in files]
    other = next((row.shape for row in rows if row.shape != rows[0].shape), None)
    if other is not None:
        first = rows[0].shape
        raise StartupError(
            f"calibration images in {folder} differ in size ({list(first)} and {list(other)}, "
            "as [channels, height, width]); resize them to the size the model is served at"
        )
    return rows


def _image(file: Path) -> torch.Tensor:
    try:
        return decode_image(encoded_image(file.read_bytes())).contiguous()
    except (OSError, EncodeError, DecodeError) as exc:
        raise StartupError(f"cannot read calibration image {file}: {exc}") from exc
