"""The inference thread's side of image inputs: a batch's pixels, in place of its placeholders.

Images decoded on the pool (``worker/pipeline/_images.py``) are awaited; JPEGs left
encoded for the device are decoded there, the whole batch's in one call. An
image that fails to decode, or decodes to another shape than its header
declared, is rejected with the codec's error (``invalid_image``, as the gate
rejects a bad header) and left out of the batch; the other inputs run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchkafka.codecs import DecodeError, EncodedImage, InvalidImage
from torchkafka.worker.pipeline._batcher import Batch, BatchItem
from torchkafka.worker.pipeline._device_jpeg import DeviceJpeg
from torchkafka.worker.pipeline._images import DecodingImage, pixel_shape
from torchkafka.worker.pipeline._records import Admitted

#: Called for each input whose image cannot be decoded (the caller dead-letters it).
Reject = Callable[[Admitted, DecodeError], None]


def with_pixels(
    batch: Batch[Admitted], device_jpeg: DeviceJpeg | None, reject: Reject
) -> Batch[Admitted] | None:
    """``batch`` with every image's pixels in its item's tensor; None if no input is left.

    Device-decoded pixels stay on the device. ``device_jpeg`` is needed only
    when the batch holds JPEGs left encoded (``ImageDecoder(device_jpeg=True)``).
    """
    encoded = [i.token.input for i in batch.items if isinstance(i.token.input, EncodedImage)]
    on_device = iter(_decode_on_device(device_jpeg, encoded))
    items: list[BatchItem[Admitted]] = []
    for item in batch.items:
        value = item.token.input
        if isinstance(value, torch.Tensor):
            items.append(item)
            continue
        try:
            if isinstance(value, DecodingImage):
                pixels = _checked(value.image, value.pixels.result())
            else:
                pixels = _checked(value, next(on_device))
        except DecodeError as exc:
            reject(item.token, exc)
            continue
        items.append(BatchItem(pixels, item.token, item.enqueued_at))
    return Batch(tuple(items), batch.capacity) if items else None


def _decode_on_device(
    device_jpeg: DeviceJpeg | None, images: list[EncodedImage]
) -> list[torch.Tensor | InvalidImage]:
    if not images:
        return []
    if device_jpeg is None:
        raise RuntimeError("JPEGs were left encoded for the device, which has no JPEG decoder")
    return device_jpeg.decode(images)


def _checked(image: EncodedImage, pixels: torch.Tensor | InvalidImage) -> torch.Tensor:
    """``pixels`` if they have the shape ``image``'s header declared; raises the error otherwise."""
    if isinstance(pixels, InvalidImage):
        raise pixels
    expected = pixel_shape(image)
    if tuple(pixels.shape) != expected:
        raise InvalidImage(
            "$",
            f"{image.format} decodes to shape {list(pixels.shape)}, "
            f"its header declares {list(expected)}",
        )
    return pixels
