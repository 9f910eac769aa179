"""Backends: each matches eager within its precision's tolerance, or fails at start-up."""

import copy
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from tests.support import tiny_models
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import OptimizeOptions, optimize
from torchkafka.worker.model._backends import TOLERANCE, max_relative_error

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
#: int8's bound on max_relative_error here (measured 0.02-0.14 on these models,
#: clipping included); a broken quantization is off by about 1.
INT8_ERROR = 0.2
NATIVE_BF16 = any(torch.cpu.get_capabilities().get(f) for f in ("avx512_bf16", "amx_bf16", "bf16"))
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU emulates bf16")


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def small_cnn() -> nn.Module:
    """[batch, 3, 8, 8] -> [batch, 5], with the BatchNorm and ReLU that backends fuse."""
    norm = nn.BatchNorm2d(8)
    norm.running_mean = torch.empty(8).uniform_(-0.5, 0.5)  # stats that are not the identity
    norm.running_var = torch.empty(8).uniform_(0.5, 2.0)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        norm,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    return module.eval()


class LabelledLogits(nn.Module):
    """A dict output: float logits and int64 labels."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(tiny_models.FEATURES, tiny_models.CLASSES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.linear(x)
        return {"logits": logits, "label": logits.argmax(dim=1)}


class Branching(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class CancelsOut(nn.Module):
    """(x + 1000) - 1000: exact in fp32, all rounding error in bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1000) - 1000


def mlp_inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, tiny_models.FEATURES)


def cnn_inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8)


MODELS = {
    "mlp": (tiny_models.tiny_mlp, mlp_inputs),
    "cnn": (small_cnn, cnn_inputs),
}


def label(options: OptimizeOptions) -> str:
    parts: list[str] = [options.backend, options.precision]
    if options.backend == "torchscript":
        parts.append(options.torchscript_method)
    if options.channels_last:
        parts.append("channels_last")
    return "-".join(parts)


def build(model: str, options: OptimizeOptions, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(eager, optimized) for one of MODELS; the example batch has 4 rows."""
    factory, inputs = MODELS[model]
    eager = factory()
    calibration = [inputs(64) for _ in range(4)] if options.backend == "int8" else ()
    built = optimize(copy.deepcopy(eager), options, inputs(4), CPU, calibration, **kwargs)
    return eager, built


def compare(eager: nn.Module, built: nn.Module, batch: torch.Tensor) -> float:
    with torch.inference_mode():
        expected, output = eager(batch), built(batch)
    assert output.dtype == torch.float32
    assert output.shape == expected.shape
    return max_relative_error(output, expected)


FLOAT_BACKENDS = [
    OptimizeOptions(),
    OptimizeOptions("torchscript"),
    OptimizeOptions("torchscript", torchscript_method="script"),
    pytest.param(OptimizeOptions("eager", "bf16"), marks=needs_native_bf16),
    pytest.param(OptimizeOptions("torchscript", "bf16"), marks=needs_native_bf16),
]
CHANNELS_LAST = [
    OptimizeOptions(channels_last=True),
    OptimizeOptions("torchscript", channels_last=True),
    pytest.param(OptimizeOptions("eager", "bf16", channels_last=True), marks=needs_native_bf16),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("options", FLOAT_BACKENDS, ids=label)
def test_backend_matches_eager(model: str, options: OptimizeOptions) -> None:
    eager, built = build(model, options)
    for batch in (1, 8):  # not the example's size: nothing may be fixed to it
        assert compare(eager, built, MODELS[model][1](batch)) <= TOLERANCE[options.precision]


@pytest.mark.parametrize("options", CHANNELS_LAST, ids=label)
def test_channels_last_matches_eager(options: OptimizeOptions) -> None:
    eager, built = build("cnn", options)
    assert compare(eager, built, cnn_inputs(8)) <= TOLERANCE[options.precision]


@needs_native_bf16
def test_bf16_computes_in_bf16_and_returns_float32() -> None:
    """Not fp32 in disguise: outputs differ from eager, within bf16's tolerance."""
    eager, built = build("mlp", OptimizeOptions("eager", "bf16"))
    error = compare(eager, built, mlp_inputs(64))
    assert 0 < error <= TOLERANCE["bf16"]


@needs_native_bf16
@pytest.mark.parametrize("backend", ["eager", "torchscript"])
def test_reduced_precision_keeps_the_output_structure(backend) -> None:
    eager = LabelledLogits().eval()
    built = optimize(copy.deepcopy(eager), OptimizeOptions(backend, "bf16"), mlp_inputs(4), CPU)
    batch = mlp_inputs(8)
    with torch.inference_mode():
        output, expected = built(batch), eager(batch)
    assert output.keys() == {"logits", "label"}
    assert output["logits"].dtype == torch.float32
    assert output["label"].dtype == torch.int64
    assert max_relative_error(output, expected) <= TOLERANCE["bf16"]


@pytest.mark.parametrize("model", MODELS)
def test_int8_is_quantized_and_close_to_eager(model: str) -> None:
    eager, built = build(model, OptimizeOptions("int8"))
    batch = MODELS[model][1](64)
    with torch.inference_mode():
        expected, output = eager(batch), built(batch)
    assert 0 < max_relative_error(output, expected) < INT8_ERROR  # rounding shows, stays small
    agreement = (output.argmax(dim=1) == expected.argmax(dim=1)).float().mean().item()
    assert agreement >= 0.9


def test_int8_channels_last() -> None:
    eager, built = build("cnn", OptimizeOptions("int8", channels_last=True))
    assert compare(eager, built, cnn_inputs(8)) < INT8_ERROR


@pytest.mark.slow
def test_int8_resnet18() -> None:
    from torchvision.models import resnet18

    eager = resnet18().eval()
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    built = optimize(
        copy.deepcopy(eager), OptimizeOptions("int8"), torch.randn(2, 3, 32, 32), CPU, calibration
    )
    assert 0 < compare(eager, built, torch.randn(4, 3, 32, 32)) < INT8_ERROR


def test_compile_builds_every_bucket_once() -> None:
    """Each bucket compiles in optimize, past a global recompile limit of 1; none again later."""
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        eager, built = build("mlp", OptimizeOptions("compile"), batch_sizes=(1, 8))
    with torch.compiler.set_stance("fail_on_recompile"):
        for size in (1, 4, 8):  # the buckets and the example's size
            batch = mlp_inputs(size)
            assert compare(eager, built, batch) <= TOLERANCE["fp32"]
            with torch.inference_mode():  # an inference tensor, as preprocessing makes
                fresh = batch.clone()
            assert compare(eager, built, fresh) <= TOLERANCE["fp32"]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_needs_native_cpu_support(monkeypatch, precision) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Old CPU"})
    with pytest.raises(StartupError, match=f"precision {precision} on this CPU \\(Old CPU\\)"):
        build("mlp", OptimizeOptions("eager", precision))


def test_fp16_runs_where_the_cpu_has_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_fp16": True})
    eager, built = build("mlp", OptimizeOptions("eager", "fp16"))
    assert 0 < compare(eager, built, mlp_inputs(64)) <= TOLERANCE["fp16"]


def test_tensorrt_without_torch_tensorrt(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import raises ImportError
    with pytest.raises(StartupError, match=r"pip install 'torchkafka\[tensorrt\]'"):
        optimize(tiny_models.tiny_mlp(), OptimizeOptions("tensorrt"), mlp_inputs(2), CUDA)


@pytest.mark.parametrize(
    ("options", "device", "message"),
    [
        (OptimizeOptions("tensorrt"), CPU, "backend tensorrt needs a CUDA device, not cpu"),
        (OptimizeOptions("int8"), CUDA, "backend int8 runs on the CPU only, not cuda"),
        (OptimizeOptions("int8", "bf16"), CPU, "backend int8 takes precision fp32"),
        (OptimizeOptions("int8"), CPU, "int8 quantization needs calibration data"),
        (OptimizeOptions("compile", compile_mode="fast"), CPU, "unknown torch.compile mode 'fast'"),
        (OptimizeOptions("onnx"), CPU, "unknown backend 'onnx'; use one of eager, "),  # type: ignore[arg-type]
        (OptimizeOptions(precision="fp8"), CPU, "unknown precision 'fp8'"),  # type: ignore[arg-type]
        (
            OptimizeOptions("torchscript", torchscript_method="export"),  # type: ignore[arg-type]
            CPU,
            "unknown torchscript method 'export'",
        ),
        (
            OptimizeOptions(channels_last=True),
            CPU,
            r"channels_last needs 4-d .* got shape \[2, 4\]",
        ),
    ],
)
def test_impossible_options_fail_at_start_up(options, device, message) -> None:
    with pytest.raises(StartupError, match=message):
        optimize(tiny_models.tiny_mlp(), options, mlp_inputs(2), device)


def test_int8_needs_a_traceable_model() -> None:
    with pytest.raises(StartupError, match=r"torch\.fx can trace symbolically") as info:
        optimize(Branching(), OptimizeOptions("int8"), mlp_inputs(2), CPU, [mlp_inputs(2)])
    assert "TraceError" in str(info.value)  # the underlying reason


def test_int8_calibration_batch_that_fails() -> None:
    calibration = [mlp_inputs(2), torch.randn(2, 7)]
    with pytest.raises(StartupError, match=r"calibration batch 2 \(shape \[2, 7\]"):
        optimize(tiny_models.tiny_mlp(), OptimizeOptions("int8"), mlp_inputs(2), CPU, calibration)


def test_script_of_an_unscriptable_model() -> None:
    class Unscriptable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * len({id(x)})  # sets of objects are beyond TorchScript

    options = OptimizeOptions("torchscript", torchscript_method="script")
    with pytest.raises(StartupError, match=r"torchscript \(script\) cannot capture the model"):
        optimize(Unscriptable(), options, mlp_inputs(2), CPU)


@needs_native_bf16
def test_a_model_too_inaccurate_in_bf16_fails_at_start_up() -> None:
    with pytest.raises(StartupError, match=r"backend eager \(bf16\) differs from eager by"):
        optimize(CancelsOut(), OptimizeOptions("eager", "bf16"), mlp_inputs(4), CPU)


def test_a_model_that_fails_on_the_example() -> None:
    error = RuntimeError("boom")
    with pytest.raises(StartupError, match="the model fails on an example batch") as info:
        optimize(tiny_models.Raising(error), OptimizeOptions(), mlp_inputs(2), CPU)
    assert info.value.__cause__ is error


def test_max_relative_error() -> None:
    reference = {"a": torch.tensor([2.0, -4.0]), "b": (torch.tensor([1, 2]),)}
    output = {"a": torch.tensor([2.0, -3.0]), "b": (torch.tensor([9, 9]),)}
    assert max_relative_error(output, reference) == 0.25  # integer outputs are not compared
    assert max_relative_error(torch.zeros(2), torch.zeros(2)) == 0.0


def test_int8_without_vnni_keeps_torchs_7_bit_activations(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", dict)
    eager, built = build("cnn", OptimizeOptions("int8"))
    assert 0 < compare(eager, built, cnn_inputs(8)) < INT8_ERROR


@pytest.mark.parametrize("backend", ["torchscript", "int8"])
def test_inference_tensor_examples(backend) -> None:
    """Example and calibration batches made under inference mode, as preprocessing makes them."""
    eager = small_cnn()
    with torch.inference_mode():
        example, calibration = cnn_inputs(4), [cnn_inputs(64) for _ in range(2)]
    built = optimize(copy.deepcopy(eager), OptimizeOptions(backend), example, CPU, calibration)
    assert compare(eager, built, cnn_inputs(8)) < INT8_ERROR
