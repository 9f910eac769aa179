"""JPEGs decoded on the GPU: one batched call, failures reported per image, a device batch.

All but the first test need CUDA; the GPU check runs them. nvJPEG and
libjpeg-turbo may round differently, so pixels are compared to Pillow's with
a small tolerance.
"""

import time

import pytest
import torch

from tests.support.fakes import MemoryOutbox
from tests.support.pictures import picture, pillow_pixels, truncated_jpeg
from tests.support.runtimes import Halving
from torchkafka.codecs import InvalidImage, Request, encoded_image
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import LoadedModel, ModelRuntime, parse_postprocess, parse_preprocess
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import (
    Admitted,
    Batch,
    BatchItem,
    DeviceJpeg,
    ImageDecoder,
    InferenceWorker,
    Record,
    StagingPool,
    batch_tensor,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# torchvision 0.29 deprecates its decoders in favour of TorchCodec, warning on each call.
QUIET = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def close_to_pillow(pixels: torch.Tensor, data: bytes) -> bool:
    reference = pillow_pixels(data)
    if pixels.shape != reference.shape:
        return False
    return bool((pixels.cpu().float() - reference.float()).abs().mean() <= 2.0)


def test_gpu_jpeg_needs_a_cuda_device() -> None:
    with pytest.raises(StartupError, match="CUDA device"):
        DeviceJpeg(torch.device("cpu"))


@CUDA
@QUIET
def test_a_batch_decodes_on_the_device_and_a_corrupt_jpeg_is_reported() -> None:
    gpu = torch.device("cuda")
    files = [picture("jpeg", 40, 24, seed=s) for s in range(3)]
    decoder = DeviceJpeg(gpu)
    good = decoder.decode([encoded_image(d) for d in files])
    for pixels, data in zip(good, files, strict=True):
        assert isinstance(pixels, torch.Tensor)
        assert pixels.is_cuda
        assert close_to_pillow(pixels, data)

    corrupt = encoded_image(truncated_jpeg(picture("jpeg", 40, 24, seed=9)))
    mixed = decoder.decode([encoded_image(files[0]), corrupt, encoded_image(files[1])])
    assert isinstance(mixed[1], InvalidImage)
    assert mixed[1].reason == "invalid_image"
    assert isinstance(mixed[0], torch.Tensor)
    assert close_to_pillow(mixed[0], files[0])


@CUDA
def test_stack_pads_with_zero_rows_and_takes_host_rows_too() -> None:
    gpu = torch.device("cuda")
    on_device = torch.full((3, 2, 2), 7, dtype=torch.uint8, device=gpu)
    on_host = torch.full((3, 2, 2), 9, dtype=torch.uint8)
    stacked = DeviceJpeg(gpu).stack([on_device, on_host], 4)
    assert stacked.is_cuda
    assert stacked.shape == (4, 3, 2, 2)
    assert stacked[:, 0, 0, 0].tolist() == [7, 9, 0, 0]


@CUDA
@QUIET
def test_the_inference_thread_runs_device_decoded_jpegs_and_dead_letters_a_corrupt_one() -> None:
    gpu = torch.device("cuda")
    device_jpeg = DeviceJpeg(gpu)
    images = ImageDecoder(1, device_jpeg=True)
    runtime = ModelRuntime(
        LoadedModel(Halving().to(gpu), "m", "1"),
        parse_preprocess("none"),
        parse_postprocess("raw"),
        gpu,
    )
    publisher = MemoryOutbox()
    pool = StagingPool()
    worker = InferenceWorker(runtime, pool, publisher, "w", 4, WorkerMetrics(), device_jpeg)
    files = {"a": picture("jpeg", 40, 24, seed=1), "png": picture("png", 40, 24, seed=2)}
    files["b"] = picture("jpeg", 40, 24, seed=3)
    sent = {**files, "corrupt": truncated_jpeg(picture("jpeg", 40, 24, seed=4))}
    items = []
    for name, data in sent.items():
        image = encoded_image(data)
        record = Record("in", 0, 0, None, b"", [], time.monotonic())
        admitted = Admitted(record, Request(name, {"x": image}), images.start(image))
        items.append(BatchItem(batch_tensor(admitted.input), admitted, time.monotonic()))
    assert worker.try_submit(Batch(tuple(items), 8))
    worker.start()
    assert worker.stop(10)
    images.close()
    assert worker.failure is None
    for name, data in files.items():
        output = publisher.published[name].outputs["output"]
        assert close_to_pillow(output * 2, data), name
    assert publisher.dead_letters["corrupt"][0] == "invalid_image"
    assert pool.in_use == 0
