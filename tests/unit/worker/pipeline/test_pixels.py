"""A batch's pixels on the inference thread: awaited, checked, failures rejected alone."""

import time
from collections.abc import Sequence
from concurrent.futures import Future

import pytest
import torch

from tests.support.pictures import declaring, picture, pillow_pixels, truncated_jpeg
from torchkafka.codecs import DecodeError, EncodedImage, InvalidImage, Request, encoded_image
from torchkafka.worker.pipeline import (
    Admitted,
    Batch,
    BatchItem,
    DecodingImage,
    DeviceJpeg,
    ImageDecoder,
    ModelInput,
    Record,
    batch_tensor,
)
from torchkafka.worker.pipeline._pixels import with_pixels


class PillowAsDevice(DeviceJpeg):
    """Stands in for the GPU decoder: Pillow's pixels, or InvalidImage; counts its calls."""

    def __init__(self) -> None:  # no CUDA needed
        self.calls: list[int] = []

    def decode(self, images: Sequence[EncodedImage]) -> list[torch.Tensor | InvalidImage]:
        self.calls.append(len(images))
        decoded: list[torch.Tensor | InvalidImage] = []
        for image in images:
            try:
                decoded.append(pillow_pixels(image.data))
            except OSError as exc:
                decoded.append(InvalidImage("$", str(exc)))
        return decoded


@pytest.fixture
def decoder():
    images = ImageDecoder(2)
    yield images
    images.close()


def item(name: str, value: ModelInput) -> BatchItem[Admitted]:
    record = Record("in", 0, 0, None, b"", [], time.monotonic())
    request = Request(name, {"x": torch.zeros(1)})
    return BatchItem(batch_tensor(value), Admitted(record, request, value), time.monotonic())


def resolve(
    *items: BatchItem[Admitted], device: DeviceJpeg | None = None
) -> tuple[Batch[Admitted] | None, dict[str, DecodeError]]:
    rejected: dict[str, DecodeError] = {}

    def reject(admitted: Admitted, error: DecodeError) -> None:
        rejected[admitted.request.id] = error

    return with_pixels(Batch(items, 8), device, reject), rejected


def test_pool_decoded_pixels_replace_the_placeholders(decoder: ImageDecoder) -> None:
    jpeg, png = picture("jpeg", 16, 8, seed=1), picture("png", 16, 8, seed=2)
    tensor = torch.ones(3, 8, 16, dtype=torch.uint8)
    batch, rejected = resolve(
        item("j", decoder.start(encoded_image(jpeg))),
        item("t", tensor),
        item("p", decoder.start(encoded_image(png))),
    )
    assert batch is not None
    assert not rejected
    assert [i.token.request.id for i in batch.items] == ["j", "t", "p"]
    expected = [pillow_pixels(jpeg), tensor, pillow_pixels(png)]
    assert all(torch.equal(i.tensor, e) for i, e in zip(batch.items, expected, strict=True))
    assert batch.items[1].tensor is tensor


def test_an_image_that_fails_to_decode_is_rejected_alone(decoder: ImageDecoder) -> None:
    good = picture("jpeg", 16, 8, seed=1)
    corrupt = truncated_jpeg(picture("jpeg", 16, 8, seed=2))
    batch, rejected = resolve(
        item("good", decoder.start(encoded_image(good))),
        item("corrupt", decoder.start(encoded_image(corrupt))),
    )
    assert batch is not None
    assert [i.token.request.id for i in batch.items] == ["good"]
    assert list(rejected) == ["corrupt"]
    assert rejected["corrupt"].reason == "invalid_image"
    assert "truncated" in str(rejected["corrupt"])


def test_a_file_too_short_for_its_declared_pixels_is_rejected_unpadded(
    decoder: ImageDecoder,
) -> None:
    good = picture("png", 16, 8, seed=1)
    bomb = EncodedImage("jpeg", declaring(picture("jpeg", 16, 16, seed=2), 4096, 4096), 4096, 4096)
    batch, rejected = resolve(
        item("bomb", decoder.start(bomb)), item("good", decoder.start(encoded_image(good)))
    )
    assert batch is not None
    assert [i.token.request.id for i in batch.items] == ["good"]
    assert rejected["bomb"].reason == "invalid_image"
    assert "ends early" in str(rejected["bomb"])


def test_pixels_of_another_shape_than_the_header_declares_are_rejected() -> None:
    image = encoded_image(picture("png", 16, 8, seed=1))
    pixels: Future[torch.Tensor] = Future()
    pixels.set_result(torch.zeros(3, 8, 15, dtype=torch.uint8))
    batch, rejected = resolve(item("odd", DecodingImage(image, pixels)))
    assert batch is None, "nothing is left to run"
    assert rejected["odd"].reason == "invalid_image"
    assert "[3, 8, 15]" in str(rejected["odd"])


def test_jpegs_left_encoded_are_decoded_by_the_device_in_one_call(decoder: ImageDecoder) -> None:
    device = PillowAsDevice()
    jpegs = [picture("jpeg", 16, 8, seed=s) for s in range(3)]
    png = picture("png", 16, 8, seed=9)
    batch, rejected = resolve(
        item("a", encoded_image(jpegs[0])),
        item("png", decoder.start(encoded_image(png))),
        item("bad", encoded_image(truncated_jpeg(jpegs[1]))),
        item("c", encoded_image(jpegs[2])),
        device=device,
    )
    assert device.calls == [3]
    assert batch is not None
    assert [i.token.request.id for i in batch.items] == ["a", "png", "c"]
    expected = [pillow_pixels(jpegs[0]), pillow_pixels(png), pillow_pixels(jpegs[2])]
    assert all(torch.equal(i.tensor, e) for i, e in zip(batch.items, expected, strict=True))
    assert list(rejected) == ["bad"]


def test_a_batch_without_encoded_jpegs_never_calls_the_device(decoder: ImageDecoder) -> None:
    device = PillowAsDevice()
    resolve(item("t", torch.zeros(2)), device=device)
    assert device.calls == []
    with pytest.raises(RuntimeError, match="no JPEG decoder"):
        resolve(item("j", encoded_image(picture("jpeg", 8, 8, seed=1))))
