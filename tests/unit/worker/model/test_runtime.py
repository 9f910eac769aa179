"""The runtime: threads, warm-up, buckets, independent per-row results, exceptions unchanged."""

import os

import pytest
import torch
from structlog.testing import capture_logs
from torch import nn

from tests.support import tiny_models
from torchkafka.codecs import ModelInfo
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import (
    Buckets,
    LoadedModel,
    ModelRuntime,
    cpu_threads,
    load_model,
    parse_model_spec,
    parse_postprocess,
    parse_preprocess,
)

CPU = torch.device("cpu")


def runtime(
    module: nn.Module,
    preprocess: str = "none",
    postprocess: str = "raw",
    buckets: Buckets | None = None,
    device: torch.device = CPU,
    cuda_graphs: bool = False,
) -> ModelRuntime:
    return ModelRuntime(
        LoadedModel(module.eval().to(device), "test", "1"),
        parse_preprocess(preprocess),
        parse_postprocess(postprocess),
        device,
        num_threads=1,
        buckets=buckets,
        cuda_graphs=cuda_graphs,
    )


def storages(rows: list[dict[str, torch.Tensor]]) -> set[int]:
    return {t.untyped_storage().data_ptr() for row in rows for t in row.values()}


def test_cpu_threads() -> None:
    available = len(os.sched_getaffinity(0))
    assert cpu_threads(None, 1) == available
    assert cpu_threads(None, 2) == max(1, available // 2)
    assert cpu_threads(None, available * 4) == 1
    assert cpu_threads(3, 8) == 3


@pytest.mark.parametrize(
    ("num_threads", "processes", "message"),
    [
        (None, 0, "worker processes must be >= 1, got 0"),
        (0, 1, "num_threads must be >= 1, got 0"),
    ],
)
def test_cpu_threads_refuses_nonsense(num_threads, processes, message) -> None:
    with pytest.raises(StartupError, match=message):
        cpu_threads(num_threads, processes)


def test_runtime_sets_torch_threads() -> None:
    model = LoadedModel(nn.Identity(), "identity", "1")
    rt = ModelRuntime(model, parse_preprocess("none"), parse_postprocess("raw"), CPU, processes=4)
    assert rt.num_threads == cpu_threads(None, 4)
    assert torch.get_num_threads() == rt.num_threads


def test_infer_returns_one_dict_per_row_viewing_one_copy() -> None:
    module = tiny_models.tiny_mlp()
    batch = torch.randn(5, tiny_models.FEATURES)
    rows = runtime(module).infer(batch)
    expected = module(batch).detach()
    assert len(rows) == 5
    for i, row in enumerate(rows):
        torch.testing.assert_close(row["output"], expected[i])
        assert not row["output"].is_inference()
    assert len(storages(rows)) == 1, "one copy of the output, viewed by every row"


def test_results_survive_reuse_of_the_staging_buffer() -> None:
    """An identity model returns the input: the results must still be copies."""
    staging = torch.arange(12, dtype=torch.float32).view(4, 3)
    rows = runtime(nn.Identity()).infer(staging)
    assert staging.untyped_storage().data_ptr() not in storages(rows)
    staging.fill_(-1)
    assert [row["output"].tolist() for row in rows] == torch.arange(12).view(4, 3).tolist()


def test_imagenet_topk_pipeline() -> None:
    module = tiny_models.TinyClassifier()
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    rows = runtime(module, "imagenet", "topk:2").infer(images)
    logits = module(parse_preprocess("imagenet")(images)).detach()
    expected = torch.topk(torch.softmax(logits, dim=1), 2, dim=1)
    for i, row in enumerate(rows):
        assert torch.equal(row["indices"], expected.indices[i])
        torch.testing.assert_close(row["probs"], expected.values[i])


@pytest.mark.parametrize(
    "error",
    [ValueError("bad input"), RuntimeError("shape mismatch"), torch.cuda.OutOfMemoryError("fake")],
)
def test_model_exceptions_propagate_unchanged(error) -> None:
    with pytest.raises(type(error)) as info:
        runtime(tiny_models.Raising(error)).infer(torch.zeros(2, 3))
    assert info.value is error


def test_warmup_runs_every_shape_and_batch_size_once() -> None:
    module = tiny_models.Recording()
    shapes = [((3, 4, 4), torch.uint8), ((5,), torch.float32)]
    seconds = runtime(module).warmup(shapes, [1, 2, 8])
    assert seconds > 0
    assert module.shapes == [
        (1, 3, 4, 4), (2, 3, 4, 4), (8, 3, 4, 4), (1, 5), (2, 5), (8, 5)
    ]  # fmt: skip


def test_warmup_failure_is_a_startup_error() -> None:
    error = RuntimeError("cannot run")
    with pytest.raises(
        StartupError, match=r"warm-up of test failed on a batch of 2 x \[5\]"
    ) as info:
        runtime(tiny_models.Raising(error)).warmup([((5,), torch.float32)], [2])
    assert info.value.__cause__ is error


def test_warmup_out_of_memory_suggests_smaller_batches() -> None:
    oom = torch.cuda.OutOfMemoryError("fake")
    with pytest.raises(StartupError, match="out of memory: use smaller batch sizes"):
        runtime(tiny_models.Raising(oom)).warmup([((5,), torch.float32)], [64])


def test_torchvision_resnet18_end_to_end() -> None:
    model = load_model(parse_model_spec("torchvision:resnet18"), None, CPU)
    rt = ModelRuntime(model, parse_preprocess("imagenet"), parse_postprocess("topk:5"), CPU)
    assert rt.warmup([((3, 64, 64), torch.uint8)], [1, 2]) > 0
    rows = rt.infer(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))
    assert rows[0]["indices"].shape == rows[0]["probs"].shape == (5,)
    assert bool((rows[0]["probs"][:-1] >= rows[0]["probs"][1:]).all())


def test_the_runtime_carries_its_model_info() -> None:
    assert runtime(nn.Identity()).info == ModelInfo("test", "1")


def test_a_batch_runs_at_its_bucket_and_only_real_rows_come_back() -> None:
    module = tiny_models.tiny_mlp()
    recorder = tiny_models.Recording()
    batch = torch.randn(3, tiny_models.FEATURES)
    rows = runtime(nn.Sequential(recorder, module), buckets=Buckets([1, 4, 8])).infer(batch)
    assert recorder.shapes == [(4, tiny_models.FEATURES)]
    assert torch.equal(recorder.inputs[0][3], torch.zeros(tiny_models.FEATURES))
    expected = module(batch).detach()
    assert len(rows) == 3
    for i, row in enumerate(rows):
        torch.testing.assert_close(row["output"], expected[i])


def test_launch_takes_a_staged_batch_and_complete_postprocesses() -> None:
    recorder = tiny_models.Recording()
    rt = runtime(recorder, buckets=Buckets([2, 4]))
    staged = torch.tensor([[1.0], [2.0], [3.0], [0.0]])
    launched = rt.launch(staged, 3)
    assert launched.done is None  # the CPU runs the model in launch
    assert recorder.shapes == [(4, 1)]
    assert [row["output"].tolist() for row in rt.complete(launched)] == [[1.0], [2.0], [3.0]]
    assert not rt.pipelined


def test_launch_refuses_a_batch_not_at_its_bucket() -> None:
    with pytest.raises(ValueError, match="3 real rows run as 4; got 3 rows"):
        runtime(nn.Identity(), buckets=Buckets([4])).launch(torch.zeros(3, 2), 3)


def test_an_output_without_the_padded_batch_dimension_is_not_cut_to_fit() -> None:
    """A model that sums over the batch: its [1, F] output is wrong, not truncated."""
    summing = tiny_models.SumOverBatch()
    with pytest.raises(ValueError, match="expected a first \\(batch\\) dimension of 3"):
        runtime(summing, buckets=Buckets([4])).infer(torch.ones(3, 2))


def test_warmup_defaults_to_every_bucket_and_logs_its_time() -> None:
    module = tiny_models.Recording()
    with capture_logs() as logs:
        seconds = runtime(module, buckets=Buckets([1, 4, 8])).warmup(
            [((3,), torch.float32), ((2, 2), torch.uint8)]
        )
    assert module.shapes == [(1, 3), (4, 3), (8, 3), (1, 2, 2), (4, 2, 2), (8, 2, 2)]
    [event] = [log for log in logs if log["event"] == "model warmed up"]
    assert event["seconds"] == round(seconds, 3)
    assert event["batch_sizes"] == [1, 4, 8]
    assert event["cuda_graphs"] == 0


def test_warmup_without_buckets_runs_a_batch_of_one() -> None:
    module = tiny_models.Recording()
    runtime(module).warmup([((3,), torch.float32)])
    assert module.shapes == [(1, 3)]


def test_cuda_graphs_need_cuda_and_buckets() -> None:
    with pytest.raises(StartupError, match="cuda_graphs needs a CUDA device and batch buckets"):
        runtime(nn.Identity(), buckets=Buckets([4]), cuda_graphs=True)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@CUDA
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_results_match_the_cpu_without_device_wide_syncs(
    cuda_graphs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu = torch.device("cuda")
    module = tiny_models.TinyClassifier()
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    expected = runtime(module, "imagenet", "topk:2").infer(images)
    rt = runtime(module, "imagenet", "topk:2", Buckets([1, 4, 8]), gpu, cuda_graphs)
    assert rt.pipelined
    rt.warmup([((3, 8, 8), torch.uint8)])
    assert torch.backends.cudnn.benchmark

    def forbidden() -> None:
        raise AssertionError("torch.cuda.synchronize() in the steady state")

    monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
    staged = torch.zeros((8, 3, 8, 8), dtype=torch.uint8, pin_memory=True)
    staged[:5] = images
    launched = rt.launch(staged, 5)
    assert isinstance(launched.output, torch.Tensor)
    assert launched.output.is_pinned()
    assert launched.output.shape == (5, 5)
    rows = rt.complete(launched)
    for row, want in zip(rows, expected, strict=True):
        assert torch.equal(row["indices"], want["indices"])
        torch.testing.assert_close(row["probs"], want["probs"], atol=1e-4, rtol=1e-4)


@CUDA
def test_cuda_launch_returns_before_the_gpu_is_done() -> None:
    rt = runtime(tiny_models.Sleeping(cycles=200_000_000), device=torch.device("cuda"))
    rt.warmup([((4,), torch.float32)])
    launched = rt.launch(torch.ones((2, 4), pin_memory=True), 2)
    assert launched.done is not None
    assert not launched.done.query()  # type: ignore[no-untyped-call]  # the GPU still sleeps
    assert [row["output"].tolist() for row in rt.complete(launched)] == [[2.0] * 4] * 2
