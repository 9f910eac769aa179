"""Where image inputs are decoded: on the polling thread, on the inference thread, or on a pool.

Feeds 224x224 JPEG requests through the worker's own pieces, without Kafka
or Redis: a "polling" thread decodes the msgpack envelope (and, in the
``poll`` design, the pixels), batches the inputs and submits batches to the
real ``InferenceWorker``, which runs a model and encodes one result per
request. Reported per design: images per second end to end, and the polling
thread's busy time per image (what caps intake, and delays pauses and
commits). Designs:

- ``poll``: Pillow on the polling thread (the worker before this change);
- ``inference``: Pillow on the inference thread, just before stacking;
- ``pool``: Pillow on the image pool once admitted (the worker's design).

    python bench/image_decode_bench.py --images 2000 --model tiny --rounds 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet18

from torchkafka.codecs import (
    DEFAULT_LIMITS,
    EncodedImage,
    Request,
    decode_image,
    decode_request,
    encode_request,
    encoded_image,
)
from torchkafka.worker.model import (
    LoadedModel,
    ModelRuntime,
    cpu_threads,
    parse_postprocess,
    parse_preprocess,
)
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import (
    Admitted,
    BatchItem,
    DecodingImage,
    ImageDecoder,
    InferenceWorker,
    MicroBatcher,
    ModelInput,
    Publisher,
    Record,
    ResultMessage,
    StagingPool,
    batch_tensor,
    decode_threads,
)

DESIGNS = ("poll", "inference", "pool")
POLL_BATCH = 64


class CountingPublisher(Publisher):
    """Counts results and dead letters; ``all_in`` is set once ``expected`` arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all_in = threading.Event()

    def results(self, results: Sequence[ResultMessage]) -> None:
        for _ in results:
            self._one()

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        self._one()

    def _one(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all_in.set()


class DecodeOnResult(Future[torch.Tensor]):
    """A "future" that decodes when its result is asked for: on the inference thread."""

    def __init__(self, image: EncodedImage) -> None:
        super().__init__()
        self._image = image

    def result(self, timeout: float | None = None) -> torch.Tensor:
        return decode_image(self._image)


class TinyConv(nn.Module):
    """A model about as fast per image as a JPEG decode on one core (a GPU model, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def photo(seed: int) -> bytes:
    """A 224x224 JPEG of gradients and noise (about 20 KB, like a small photo)."""
    size = (224, 224)
    channels = [
        Image.linear_gradient("L").resize(size).rotate(seed % 360),
        Image.radial_gradient("L").resize(size),
        Image.effect_noise(size, 40 + seed % 20),
    ]
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_runtime(model: str) -> ModelRuntime:
    module = TinyConv() if model == "tiny" else resnet18()
    return ModelRuntime(
        LoadedModel(module.eval(), model, "1"),
        parse_preprocess("imagenet"),
        parse_postprocess("topk:5"),
        torch.device("cpu"),
    )


def run_design(
    design: str, values: list[bytes], runtime: ModelRuntime, threads: int
) -> tuple[float, float]:
    """(images per second end to end, polling-thread µs per image) for one design."""
    publisher = CountingPublisher(len(values))
    inference = InferenceWorker(
        runtime, StagingPool(pin_memory=False), publisher, "bench", 2, WorkerMetrics()
    )
    pool = ImageDecoder(threads) if design == "pool" else None
    batcher: MicroBatcher[Admitted] = MicroBatcher(32, 0.005)
    inference.start()
    busy = 0.0
    start = time.perf_counter()
    ready = []
    for first in range(0, len(values), POLL_BATCH):
        began = time.perf_counter()
        now = time.monotonic()
        for offset, value in enumerate(values[first : first + POLL_BATCH], first):
            request = decode_request(value, DEFAULT_LIMITS)
            image = request.inputs["x"]
            if not isinstance(image, EncodedImage):
                raise TypeError("the bench sends images only")
            model_input: ModelInput
            if design == "poll":
                model_input = decode_image(image)
            elif pool is not None:
                model_input = pool.start(image)
            else:
                model_input = DecodingImage(image, DecodeOnResult(image))
            record = Record("in", 0, offset, None, value, [], now)
            admitted = Admitted(record, request, model_input)
            ready += batcher.add(BatchItem(batch_tensor(model_input), admitted, now))
        ready += batcher.due(time.monotonic())
        busy += time.perf_counter() - began
        while ready:  # the real loop keeps polling (paused); here there is nothing more to read
            if inference.try_submit(ready[0]):
                ready.pop(0)
            else:
                inference.wait_for_room(0.05)
    for batch in batcher.drain():
        while not inference.try_submit(batch):
            inference.wait_for_room(0.05)
    if not publisher.all_in.wait(600):
        raise RuntimeError(f"{publisher.count} of {len(values)} results after 600 s")
    elapsed = time.perf_counter() - start
    inference.stop(10)
    if pool is not None:
        pool.close()
    return len(values) / elapsed, busy / len(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", choices=["tiny", "resnet18"], default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="pool threads; 0: the worker's default"
    )
    args = parser.parse_args()
    threads = decode_threads(args.threads, cpu_threads(None, 1))
    values = [
        encode_request(Request(f"img-{i}", {"x": encoded_image(photo(i % 50))}))
        for i in range(args.images)
    ]
    runtime = make_runtime(args.model)
    runtime.warmup([((3, 224, 224), torch.uint8)], [1, 32])
    print(
        f"{args.images} JPEG requests, 224x224, model {args.model}, "
        f"{runtime.num_threads} torch threads, {threads} pool threads; "
        f"median of {args.rounds} rounds"
    )
    print(f"{'design':<10} {'images/s':>9} {'poll µs/image':>14}")
    for design in DESIGNS:
        runs = [run_design(design, values, runtime, threads) for _ in range(args.rounds)]
        rate = statistics.median(r[0] for r in runs)
        busy = statistics.median(r[1] for r in runs)
        print(f"{design:<10} {rate:>9.0f} {busy:>14.1f}")


if __name__ == "__main__":
    main()
