"""The image pool: admitted images decode off the calling thread; shapes come from headers."""

import threading

import pytest
import torch

from tests.support.pictures import picture, pillow_pixels
from torchkafka.codecs import EncodedImage, encoded_image
from torchkafka.worker._errors import StartupError
from torchkafka.worker.pipeline import DecodingImage, ImageDecoder, batch_tensor, decode_threads


@pytest.fixture
def decoder():
    images = ImageDecoder(2)
    yield images
    images.close()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_an_image_decodes_on_the_pool_to_pillows_pixels(decoder: ImageDecoder, fmt: str) -> None:
    data = picture(fmt, 20, 12, seed=1)
    started = decoder.start(encoded_image(data))
    assert isinstance(started, DecodingImage)
    pixels = started.pixels.result(timeout=10)
    assert torch.equal(pixels, pillow_pixels(data))
    assert pixels.is_cpu


def test_the_decode_runs_on_a_pool_thread(decoder: ImageDecoder, monkeypatch) -> None:
    threads: list[str] = []

    def decode(image: EncodedImage) -> torch.Tensor:
        threads.append(threading.current_thread().name)
        return torch.zeros(3, image.height, image.width, dtype=torch.uint8)

    monkeypatch.setattr("torchkafka.worker.pipeline._images.decode_image", decode)
    started = decoder.start(encoded_image(picture("png", 4, 4, seed=1)))
    assert isinstance(started, DecodingImage)
    started.pixels.result(timeout=10)
    assert threads[0].startswith("torchkafka-decode")


def test_with_device_jpeg_a_jpeg_stays_encoded_and_a_png_decodes() -> None:
    decoder = ImageDecoder(1, device_jpeg=True)
    try:
        jpeg = encoded_image(picture("jpeg", 8, 8, seed=1))
        assert decoder.start(jpeg) is jpeg
        assert isinstance(decoder.start(encoded_image(picture("png", 8, 8, seed=1))), DecodingImage)
    finally:
        decoder.close()


def test_a_cancelled_decode_not_yet_begun_never_runs(monkeypatch) -> None:
    decoder = ImageDecoder(1)
    release = threading.Event()
    decoded: list[EncodedImage] = []

    def decode(image: EncodedImage) -> torch.Tensor:
        release.wait(10)
        decoded.append(image)
        return torch.zeros(3, image.height, image.width, dtype=torch.uint8)

    monkeypatch.setattr("torchkafka.worker.pipeline._images.decode_image", decode)
    image = encoded_image(picture("png", 4, 4, seed=1))
    running, queued = decoder.start(image), decoder.start(image)
    decoder.cancel([running, queued, torch.zeros(1), image])  # tensors and images: nothing to do
    release.set()
    assert isinstance(queued, DecodingImage)
    assert queued.pixels.cancelled()
    decoder.close()
    assert isinstance(running, DecodingImage)
    running.pixels.result(timeout=10)
    assert len(decoded) == 1


def test_the_batcher_groups_images_by_their_header_shape(decoder: ImageDecoder) -> None:
    image = encoded_image(picture("jpeg", 20, 12, seed=1))
    for value in (image, decoder.start(image)):
        grouped_by = batch_tensor(value)
        assert (grouped_by.shape, grouped_by.dtype) == ((3, 12, 20), torch.uint8)
        assert grouped_by.is_meta  # no data: a batch stacked before its pixels fails
    tensor = torch.zeros(2, 3)
    assert batch_tensor(tensor) is tensor


def test_decode_threads_default_to_the_cpus_up_to_four() -> None:
    assert [decode_threads(0, cpus) for cpus in (1, 2, 16)] == [1, 2, 4]
    assert decode_threads(7, 2) == 7
    with pytest.raises(StartupError, match="image_decode_threads"):
        ImageDecoder(0)
