"""The inference thread: one outcome per input, bisection, OOM splits, expiry, buckets, swaps.

Every behaviour runs both ways: as on the CPU (launch, then complete) and
pipelined as on CUDA (launch batch k+1, then complete batch k), which the
CPU runtime does when told it is pipelined.
"""

import time
from typing import cast

import pytest
import torch
from torch import nn

from tests.support import tiny_models
from tests.support.fakes import MemoryOutbox
from tests.support.pictures import picture, pillow_pixels, truncated_jpeg
from tests.support.runtimes import POISON, WAIT_S, Doubling, Gated, Halving, make_runtime
from torchkafka.codecs import EncodedImage, Request, encoded_image
from torchkafka.worker import TransientError
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.model import (
    Buckets,
    Launched,
    LoadedModel,
    ModelRuntime,
    parse_postprocess,
    parse_preprocess,
)
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
from torchkafka.worker.pipeline._inference import OOM_TRIES

FEATURES = 2


class OutOfMemoryAbove(nn.Module):
    """x * 2; CUDA out of memory on batches of more than ``rows`` rows (padding included)."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.rows:
            raise torch.cuda.OutOfMemoryError("fake")
        return x * 2


class Tracing(ModelRuntime):
    """Records the order of launches and completions, by the first input value."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[str] = []

    def launch(self, batch: torch.Tensor, count: int) -> Launched:
        self.calls.append(f"launch {batch[0, 0]:.0f}")
        return super().launch(batch, count)

    def complete(self, launched: Launched) -> list[dict[str, torch.Tensor]]:
        assert isinstance(launched.output, torch.Tensor)
        self.calls.append(f"complete {launched.output[0, 0] / 2:.0f}")
        return super().complete(launched)


def item(i: int, value: float | None = None, deadline_ms: int | None = None) -> BatchItem[Admitted]:
    tensor = torch.full((FEATURES,), float(i) if value is None else value)
    record = Record("in", 0, i, None, b"", [], time.monotonic())
    request = Request(f"r{i}", {"x": tensor}, None, deadline_ms)
    return BatchItem(tensor, Admitted(record, request, tensor), time.monotonic())


def batch(*items: BatchItem[Admitted], capacity: int = 8) -> Batch[Admitted]:
    return Batch(items, capacity)


def make_worker(
    rt: ModelRuntime, publisher: MemoryOutbox, pool: StagingPool | None = None
) -> InferenceWorker:
    pool = pool or StagingPool(pin_memory=False)
    return InferenceWorker(rt, pool, publisher, "w", 8, WorkerMetrics())


def run(worker: InferenceWorker, *batches: Batch[Admitted]) -> None:
    """Queue every batch before the thread starts (a fixed order), then drain and stop."""
    for queued in batches:
        assert worker.try_submit(queued)
    worker.start()
    assert worker.stop(WAIT_S)
    assert worker.failure is None
    assert worker.idle()


PIPELINED = pytest.mark.parametrize("pipelined", [False, True], ids=["cpu", "pipelined"])


@PIPELINED
def test_one_result_per_input_in_every_batch(pipelined: bool) -> None:
    publisher = MemoryOutbox()
    pool = StagingPool(pin_memory=False)
    rt = make_runtime(Doubling(), pipelined)
    run(make_worker(rt, publisher, pool), batch(item(1), item(2)), batch(item(3)), batch(item(4)))
    assert publisher.outputs() == {f"r{i}": [2.0 * i] * FEATURES for i in range(1, 5)}
    assert {r.model.version for r in publisher.published.values()} == {"1"}
    assert publisher.dead_letters == {}
    assert pool.in_use == 0


@pytest.mark.parametrize(
    ("pipelined", "order"),
    [
        (False, ["launch 1", "complete 1", "launch 2", "complete 2", "launch 3", "complete 3"]),
        (True, ["launch 1", "launch 2", "complete 1", "launch 3", "complete 2", "complete 3"]),
    ],
    ids=["cpu", "pipelined"],
)
def test_a_pipelined_runtime_keeps_one_batch_in_flight(pipelined: bool, order: list[str]) -> None:
    rt = make_runtime(Doubling(), pipelined, kind=Tracing)
    run(make_worker(rt, MemoryOutbox()), batch(item(1)), batch(item(2)), batch(item(3)))
    assert isinstance(rt, Tracing)
    assert rt.calls == order


@PIPELINED
@pytest.mark.parametrize("where", ["model", "postprocess"])
def test_only_the_failing_inputs_are_dead_lettered(pipelined: bool, where: str) -> None:
    """A poisoned input raises in launch (the model) or in complete (postprocessing)."""
    module, postprocess = (Doubling(), "raw") if where == "model" else (PoisonedOutput(), "topk:1")
    publisher = MemoryOutbox()
    pool = StagingPool(pin_memory=False)
    rt = make_runtime(module, pipelined, postprocess=postprocess)
    first = batch(item(0), item(1, POISON), item(2), item(3), item(4, POISON))
    run(make_worker(rt, publisher, pool), first, batch(item(5)))
    assert set(publisher.published) == {"r0", "r2", "r3", "r5"}
    assert set(publisher.dead_letters) == {"r1", "r4"}
    assert {reason for reason, _ in publisher.dead_letters.values()} == {WorkerReason.MODEL_ERROR}
    assert pool.in_use == 0


class PoisonedOutput(nn.Module):
    """Logits [batch, 2]; a batch holding POISON gets a 3-d output, which topk refuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if bool((x == POISON).any()) else x


@PIPELINED
@pytest.mark.parametrize(
    ("buckets", "limit"),
    [(None, 3), (Buckets([1, 4, 8]), 4), (Buckets([1, 2, 8]), 2)],
    ids=["half", "the-bucket-below", "the-bucket-below-it"],
)
def test_out_of_memory_splits_and_lowers_the_batch_limit(
    pipelined: bool, buckets: Buckets | None, limit: int
) -> None:
    """Six inputs on a model that runs out of memory above four rows (padding included)."""
    publisher = MemoryOutbox()
    rt = make_runtime(OutOfMemoryAbove(rows=4), pipelined, buckets=buckets)
    worker = make_worker(rt, publisher)
    run(worker, batch(*(item(i) for i in range(6))))
    assert publisher.outputs() == {f"r{i}": [2.0 * i] * FEATURES for i in range(6)}
    assert worker.batch_limit == limit


class OutOfMemoryFirst(nn.Module):
    """x * 2, after running out of memory on its first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.failures > 0:
            self.failures -= 1
            raise torch.cuda.OutOfMemoryError("fake")
        return x * 2


@PIPELINED
def test_out_of_memory_on_one_input_is_retried_not_dead_lettered(pipelined: bool) -> None:
    publisher = MemoryOutbox()
    model = OutOfMemoryFirst(failures=OOM_TRIES - 1)
    run(make_worker(make_runtime(model, pipelined), publisher), batch(item(1)))
    assert publisher.outputs() == {"r1": [2.0] * FEATURES}
    assert publisher.dead_letters == {}


@PIPELINED
def test_one_input_that_keeps_running_out_of_memory_stops_the_worker(pipelined: bool) -> None:
    publisher = MemoryOutbox()
    worker = make_worker(make_runtime(OutOfMemoryAbove(0), pipelined), publisher)
    assert worker.try_submit(batch(item(1)))
    worker.start()
    assert worker.stop(WAIT_S)
    assert isinstance(worker.failure, TransientError)
    assert "CUDA out of memory on one input ('r1') 3 times in a row" in str(worker.failure)
    assert publisher.dead_letters == {}  # transient: the record is run again after a restart
    assert publisher.published == {}


@PIPELINED
def test_inputs_past_their_deadline_are_dead_lettered(pipelined: bool) -> None:
    publisher = MemoryOutbox()
    past = int(time.time() * 1000) - 1000
    future = int(time.time() * 1000) + 60_000
    expired = batch(item(1, deadline_ms=past), item(2, deadline_ms=future), item(3))
    run(
        make_worker(make_runtime(Doubling(), pipelined), publisher),
        expired,
        batch(item(4, deadline_ms=past)),
    )
    assert set(publisher.published) == {"r2", "r3"}
    assert set(publisher.dead_letters) == {"r1", "r4"}
    assert publisher.dead_letters["r1"][0] == WorkerReason.EXPIRED


@PIPELINED
def test_batches_run_padded_to_their_bucket_with_zero_rows(pipelined: bool) -> None:
    publisher = MemoryOutbox()
    pool = StagingPool(pin_memory=False)
    pool.release(pool.acquire((FEATURES,), torch.float32, 8).fill_(float("nan")))  # stale data
    recorder = tiny_models.Recording()
    rt = make_runtime(nn.Sequential(recorder, Doubling()), pipelined, buckets=Buckets([1, 4, 8]))
    run(make_worker(rt, publisher, pool), batch(item(1), item(2), item(3)), batch(item(4)))
    assert recorder.shapes == [(4, FEATURES), (1, FEATURES)]
    assert torch.equal(recorder.inputs[0][3], torch.zeros(FEATURES))
    assert publisher.outputs() == {f"r{i}": [2.0 * i] * FEATURES for i in range(1, 5)}
    assert pool.allocations == (2 if pipelined else 1)  # buckets share capacity-sized buffers


@PIPELINED
@pytest.mark.parametrize("poisoned", [False, True])
def test_a_swap_takes_effect_between_batches(pipelined: bool, poisoned: bool) -> None:
    """The batch in progress, and the halves of its failure, finish on the old model."""
    publisher = MemoryOutbox()
    gated = Gated()
    worker = make_worker(make_runtime(gated, pipelined, version="old"), publisher)
    worker.start()
    assert worker.try_submit(batch(item(1), item(2, POISON if poisoned else None)))
    assert gated.entered.wait(WAIT_S)
    assert not worker.idle()
    worker.swap_runtime(make_runtime(Doubling(), pipelined, version="new"))
    gated.gate.set()
    assert worker.try_submit(batch(item(3)))
    assert worker.stop(WAIT_S)
    assert worker.failure is None
    versions = {rid: result.model.version for rid, result in publisher.published.items()}
    if poisoned:
        assert versions == {"r1": "old", "r3": "new"}
        assert set(publisher.dead_letters) == {"r2"}
    else:
        assert versions == {"r1": "old", "r2": "old", "r3": "new"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_the_cuda_pipeline_gives_every_result_and_returns_every_buffer(cuda_graphs: bool) -> None:
    gpu = torch.device("cuda")
    rt = ModelRuntime(
        LoadedModel(Doubling().to(gpu), "m", "1"),
        parse_preprocess("none"),
        parse_postprocess("raw"),
        gpu,
        buckets=Buckets([1, 4, 8]),
        cuda_graphs=cuda_graphs,
    )
    assert rt.pipelined
    rt.warmup([((FEATURES,), torch.float32)])
    publisher = MemoryOutbox()
    pool = StagingPool()
    batches = [batch(*(item(i) for i in range(start, start + 3))) for start in range(0, 30, 3)]
    run(make_worker(rt, publisher, pool), *batches)
    assert publisher.outputs() == {f"r{i}": [2.0 * i] * FEATURES for i in range(30)}
    assert pool.pinned
    assert pool.in_use == 0
    assert pool.allocations <= 2  # one in flight, one being staged


def image_item(name: str, data: bytes, images: ImageDecoder) -> BatchItem[Admitted]:
    image = encoded_image(data)
    record = Record("in", 0, 0, None, b"", [], time.monotonic())
    admitted = Admitted(record, Request(name, {"x": image}), images.start(image))
    return BatchItem(batch_tensor(admitted.input), admitted, time.monotonic())


@PIPELINED
def test_images_run_on_their_pixels_and_one_that_fails_to_decode_is_dead_lettered(
    pipelined: bool,
) -> None:
    publisher = MemoryOutbox()
    pool = StagingPool(pin_memory=False)
    images = ImageDecoder(2)
    files = {f"i{n}": picture("jpeg" if n % 2 else "png", 12, 8, seed=n) for n in range(4)}
    corrupt = truncated_jpeg(picture("jpeg", 12, 8, seed=9))
    items = [image_item(name, data, images) for name, data in files.items()]
    items.insert(2, image_item("corrupt", corrupt, images))
    run(make_worker(make_runtime(Halving(), pipelined), publisher, pool), batch(*items))
    images.close()
    for name, data in files.items():
        expected = Halving()(pillow_pixels(data).unsqueeze(0))[0]
        assert torch.equal(publisher.published[name].outputs["output"], expected), name
    assert set(publisher.dead_letters) == {"corrupt"}
    reason, error = publisher.dead_letters["corrupt"]
    assert reason == "invalid_image"
    assert "truncated" in error
    assert pool.in_use == 0


def test_a_batch_that_never_finishes_shows_as_stalled() -> None:
    gated = Gated()
    worker = make_worker(make_runtime(gated, pipelined=False), MemoryOutbox())
    assert worker.stalled_for(time.monotonic() + 100) == 0.0  # idle: never stalled
    worker.start()
    assert worker.try_submit(batch(item(1)))
    assert gated.entered.wait(WAIT_S)
    assert worker.stalled_for(time.monotonic() + 100) > 99  # held by the model
    gated.gate.set()
    assert worker.stop(WAIT_S)
    assert worker.stalled_for(time.monotonic() + 100) == 0.0


class ShortOfMemoryJpeg:
    """A device JPEG decoder that runs out of memory on more than one image at a time."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def decode(self, images: list[EncodedImage]) -> list[torch.Tensor]:
        self.calls.append(len(images))
        if len(images) > 1:
            raise torch.cuda.OutOfMemoryError("fake")
        return [pillow_pixels(images[0].data)]


def test_out_of_memory_decoding_jpegs_on_the_device_decodes_halves() -> None:
    publisher = MemoryOutbox()
    device_jpeg = ShortOfMemoryJpeg()
    images = ImageDecoder(1, device_jpeg=True)  # JPEGs stay encoded for the device
    files = {f"i{n}": picture("jpeg", 12, 8, seed=n) for n in range(4)}
    items = [image_item(name, data, images) for name, data in files.items()]
    worker = InferenceWorker(
        make_runtime(Halving(), pipelined=False),
        StagingPool(pin_memory=False),
        publisher,
        "w",
        8,
        WorkerMetrics(),
        device_jpeg=cast(DeviceJpeg, device_jpeg),
    )
    run(worker, batch(*items))
    images.close()
    assert device_jpeg.calls == [4, 2, 1, 1, 2, 1, 1]
    for name, data in files.items():
        expected = Halving()(pillow_pixels(data).unsqueeze(0))[0]
        assert torch.equal(publisher.published[name].outputs["output"], expected), name


def test_each_batch_that_ran_reports_its_size_and_time() -> None:
    reported: list[tuple[int, float]] = []
    worker = InferenceWorker(
        make_runtime(Doubling(), False),
        StagingPool(pin_memory=False),
        MemoryOutbox(),
        "w",
        8,
        WorkerMetrics(),
        batch_times=lambda size, seconds: reported.append((size, seconds)),
    )
    run(worker, batch(item(1), item(2), item(3)), batch(item(4)))
    assert [size for size, _ in reported] == [3, 1]
    assert all(seconds > 0 for _, seconds in reported)
