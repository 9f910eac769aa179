"""JPEG inputs decoded on the GPU (nvJPEG through torchvision), straight into device memory.

Only this path uses torchvision's decoders: its CPU decoders crashed the
process under fuzzing (see ``codecs/_image.py``), so every CPU decode stays
with Pillow. A batch's JPEGs are decoded in one call; when that call fails,
they are decoded one by one to find the ones that cannot be, which are
reported as ``InvalidImage``, never raised. The work runs on a stream of its
own, and ``stack`` waits for that stream only, never for the whole device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from torchkafka.codecs import EncodedImage, InvalidImage
from torchkafka.worker._errors import StartupError


class DeviceJpeg:
    """Decodes JPEGs to (3, height, width) uint8 RGB tensors on one CUDA device."""

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise StartupError(f"gpu_jpeg needs the model on a CUDA device, not {device}")
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError as exc:
            raise StartupError(f"gpu_jpeg needs torchvision: {exc}") from exc
        self._decode: Callable[..., list[torch.Tensor]] = decode_jpeg
        self._rgb = ImageReadMode.RGB
        self._device = device
        self._stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]

    def decode(self, images: Sequence[EncodedImage]) -> list[torch.Tensor | InvalidImage]:
        """Each image's pixels on the device, or why it could not be decoded."""
        data = [torch.frombuffer(bytearray(image.data), dtype=torch.uint8) for image in images]
        with torch.cuda.stream(self._stream):
            try:
                return list(self._decode(data, mode=self._rgb, device=self._device))
            except torch.cuda.OutOfMemoryError:
                raise  # the device's trouble, not the images'
            except RuntimeError:
                return [self._decode_one(tensor) for tensor in data]

    def stack(self, tensors: Sequence[torch.Tensor], rows: int) -> torch.Tensor:
        """``tensors`` (on the device or the host) as one ``(rows, ...)`` device batch.

        The rows after the tensors are zeros (bucket padding). Returns once
        the batch is complete, so any stream may read it.
        """
        count = len(tensors)
        with torch.cuda.stream(self._stream):
            first = tensors[0]
            batch = torch.empty((rows, *first.shape), dtype=first.dtype, device=self._device)
            torch.stack([t.to(self._device) for t in tensors], out=batch[:count])
            batch[count:].zero_()
        self._stream.synchronize()
        return batch

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | InvalidImage:
        try:
            (pixels,) = self._decode([data], mode=self._rgb, device=self._device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            return InvalidImage("$", f"cannot decode jpeg on {self._device}: {exc}")
        return pixels
