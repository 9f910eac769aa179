"""Image inputs decoded off the polling thread, on a small thread pool.

The gate admits an image with only its header read (codecs checked the
format and width x height against the pixel limit), then ``ImageDecoder.start``
hands its pixels to the pool (Pillow releases the GIL while it decodes). The
batcher groups it by the shape its header declares: ``batch_tensor`` is a
meta tensor of that shape, which holds no data, so stacking a batch before
its pixels are in fails loudly. The inference thread puts the pixels in
(``worker/pipeline/_pixels.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from torchkafka.codecs import EncodedImage, decode_image
from torchkafka.worker._errors import StartupError

#: The most decode threads a worker starts by default.
DEFAULT_MAX_THREADS = 4


@dataclass(frozen=True, slots=True)
class DecodingImage:
    """An admitted image input whose pixels are being decoded on the pool."""

    image: EncodedImage
    pixels: Future[torch.Tensor]


#: What the model gets for a request: a tensor, an image not yet admitted or
#: left for the device to decode (JPEG with ``gpu_jpeg``), or one being decoded.
ModelInput = torch.Tensor | EncodedImage | DecodingImage


def pixel_shape(image: EncodedImage) -> tuple[int, int, int]:
    """The (channels, height, width) that ``image`` decodes to: RGB, per its header."""
    return (3, image.height, image.width)


def batch_tensor(value: ModelInput) -> torch.Tensor:
    """What the batcher groups ``value`` by: the tensor, or an image's shape as a meta tensor."""
    if isinstance(value, torch.Tensor):
        return value
    image = value.image if isinstance(value, DecodingImage) else value
    return torch.empty(pixel_shape(image), dtype=torch.uint8, device="meta")


class ImageDecoder:
    """Decodes admitted images on ``threads`` threads; JPEGs are left encoded with ``device_jpeg``.

    ``start`` and ``cancel`` are called by the polling thread; the futures are
    awaited by the inference thread.
    """

    def __init__(self, threads: int, *, device_jpeg: bool = False) -> None:
        if threads < 1:
            raise StartupError(f"image_decode_threads must be >= 1, got {threads}")
        self.threads = threads
        self._device_jpeg = device_jpeg
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="torchkafka-decode")

    def start(self, image: EncodedImage) -> EncodedImage | DecodingImage:
        """Begin decoding ``image``; a JPEG is returned unchanged when the device decodes JPEGs."""
        if self._device_jpeg and image.format == "jpeg":
            return image
        return DecodingImage(image, self._pool.submit(decode_image, image))

    def cancel(self, values: Iterable[ModelInput]) -> None:
        """Drop the decodes of ``values`` not yet begun (their work was dropped)."""
        for value in values:
            if isinstance(value, DecodingImage):
                value.pixels.cancel()

    def close(self) -> None:
        """Stop the threads once their current decode is done; queued decodes are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def decode_threads(configured: int, cpus: int) -> int:
    """``configured`` decode threads, or for 0 one per CPU of the process (``cpus``), at most 4."""
    return configured or max(1, min(DEFAULT_MAX_THREADS, cpus))
