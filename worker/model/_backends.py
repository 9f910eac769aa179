"""Turning a loaded model into an optimized one: inference backends and precisions.

``optimize`` takes an eval-mode module on its device and returns a module
that takes the same float32 input and returns outputs of the same structure,
shapes and dtypes as eager, within ``TOLERANCE`` of eager's values (int8 is
judged by top-1 agreement instead; see docs/backends.md):

    eager        the module itself
    torchscript  torch.jit.trace (or script), then freeze and optimize_for_inference
    compile      torch.compile with static shapes: one graph per batch size
    tensorrt     torch_tensorrt.compile(ir="dynamo"), CUDA only (the tensorrt extra)
    int8         static post-training quantization, CPU only (see ``_quantize``)

Precision fp16/bf16 converts the weights (``module.to(dtype)``) and casts
each input batch to that dtype and floating outputs back to float32. Weights
are converted rather than autocast because it is faster (no per-call weight
casts; half the weight memory) and is what TensorRT's explicit typing needs.
``channels_last`` converts the module's and each batch's memory format.

Every failure to build is a ``StartupError``, raised before anything is
consumed; the built module has run the example batch, and matched eager on
it, before ``optimize`` returns.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

import torch
from torch.utils._pytree import tree_flatten, tree_map_only

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import Backend, Precision
from torchkafka.worker.model._quantize import quantization_warnings_silenced, quantize_int8

TorchscriptMethod = Literal["trace", "script"]

BACKENDS: tuple[Backend, ...] = get_args(Backend)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
TORCHSCRIPT_METHODS: tuple[TorchscriptMethod, ...] = get_args(TorchscriptMethod)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

DTYPES: Mapping[Precision, torch.dtype] = MappingProxyType(
    {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
)

#: Largest allowed ``max_relative_error`` against fp32 eager, per precision.
#: fp32 allows for TF32 (cuDNN's default for float32 convolutions on GPUs);
#: on CPUs fp32 backends differ by about 1e-6. fp16 and bf16 keep 10 and 7
#: mantissa bits; tiny MLPs and resnet18 measured below 1e-3 and 1e-2.
TOLERANCE: Mapping[Precision, float] = MappingProxyType({"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2})

#: CPU features (``torch.cpu.get_capabilities()``) that compute in fp16/bf16
#: natively. Without them torch emulates: fp16 resnet18 ran 20x slower than
#: fp32 on an AVX-512 CPU without AVX512-FP16.
_NATIVE_CPU_FEATURES: Mapping[Precision, tuple[str, ...]] = MappingProxyType(
    {
        "fp32": (),
        "fp16": ("avx512_fp16", "amx_fp16", "fp16_arith"),
        "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    }
)

_JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"
_TENSORRT_HINT = "pip install 'torchkafka[tensorrt]' on a machine with CUDA"
_INDUCTOR_CPU_HINT = (
    "; on the CPU torch.compile needs a C++ compiler (g++) and the Python headers "
    "(deploy/local/install-system-deps.sh installs both)"
)


@dataclass(frozen=True, slots=True)
class OptimizeOptions:
    """How to optimize a model; the defaults leave it as it is (eager, fp32).

    ``compile_mode`` is torch.compile's mode (``COMPILE_MODES``);
    ``torchscript_method`` how the torchscript backend captures the model.
    """

    backend: Backend = "eager"
    precision: Precision = "fp32"
    channels_last: bool = False
    compile_mode: str = "default"
    torchscript_method: TorchscriptMethod = "trace"


def optimize(
    module: torch.nn.Module,
    options: OptimizeOptions,
    example: torch.Tensor,
    device: torch.device,
    calibration: Iterable[torch.Tensor] = (),
    *,
    batch_sizes: Sequence[int] = (),
) -> torch.nn.Module:
    """``module`` built for fast inference on ``device`` as ``options`` say.

    ``module`` is in eval mode on ``device`` and is converted in place: use
    only the returned module afterwards. ``example`` is one float32 input
    batch on ``device``; the result must match eager on it. ``calibration``
    yields input batches like ``example`` (int8 only, and required there).
    ``batch_sizes`` are the batch sizes the module will be called with
    (the runtime's buckets): compile builds one static graph for each, and
    for ``example``'s, here; tensorrt builds an engine for their range. Call
    the result under ``torch.inference_mode()``, as the runtime does.
    Raises ``StartupError`` when the backend cannot be built or run here.
    """
    _check_options(options, example, device)
    reference = _run_example(module, example, "the model")
    dtype = DTYPES[options.precision]
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    module.to(dtype).to(memory_format=memory_format)

    def adapt(batch: torch.Tensor) -> torch.Tensor:
        return _adapt(batch.to(device), dtype, memory_format)

    sizes = sorted({example.shape[0], *batch_sizes})
    examples = [adapt(_with_batch_size(example, size)) for size in sizes]
    built = _build(module, options, adapt(example), examples, map(adapt, calibration))
    if dtype != torch.float32 or options.channels_last:
        built = _Adapted(built, dtype, memory_format)
    _verify(built, options, example, reference)
    return built


def max_relative_error(output: object, reference: object) -> float:
    """The largest ``max|output - reference| / max|reference|`` over floating tensors.

    ``output`` and ``reference`` are model outputs of one structure (a
    tensor, or tuples, lists and dicts of them); 0.0 if none is floating.
    """
    errors = [0.0]
    for out, ref in zip(tree_flatten(output)[0], tree_flatten(reference)[0], strict=True):
        if isinstance(ref, torch.Tensor) and ref.is_floating_point() and ref.numel():
            ref64, out64 = ref.double(), out.double()
            scale = ref64.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            errors.append(float((out64 - ref64).abs().max() / scale))
    return max(errors)


class _Adapted(torch.nn.Module):
    """Feeds ``inner`` batches in its dtype and memory format; floating outputs as float32."""

    def __init__(
        self, inner: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format
    ) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.memory_format = memory_format

    def forward(self, batch: torch.Tensor) -> object:
        output = self.inner(_adapt(batch, self.dtype, self.memory_format))
        return tree_map_only(torch.Tensor, _float32, output)


def _adapt(
    batch: torch.Tensor, dtype: torch.dtype, memory_format: torch.memory_format
) -> torch.Tensor:
    return batch.to(dtype).contiguous(memory_format=memory_format)


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def _with_batch_size(example: torch.Tensor, size: int) -> torch.Tensor:
    """A contiguous batch of ``size`` copies of ``example``'s first row."""
    return example[:1].expand(size, *example.shape[1:]).contiguous()


def _check_options(options: OptimizeOptions, example: torch.Tensor, device: torch.device) -> None:
    """The cheap checks, before anything runs: the combination must make sense here."""
    _require_known(options.backend, BACKENDS, "backend")
    _require_known(options.precision, PRECISIONS, "precision")
    if options.backend == "torchscript":
        _require_known(options.torchscript_method, TORCHSCRIPT_METHODS, "torchscript method")
    if options.backend == "compile":
        _require_known(options.compile_mode, COMPILE_MODES, "torch.compile mode")
    if options.channels_last and example.dim() != 4:
        raise StartupError(
            "channels_last needs 4-d [batch, channels, height, width] model inputs, "
            f"got shape {list(example.shape)}"
        )
    if options.backend == "int8":
        if device.type != "cpu":
            raise StartupError(f"backend int8 runs on the CPU only, not {device}")
        if options.precision != "fp32":
            raise StartupError(
                f"backend int8 takes precision fp32 (float32 inputs and outputs around "
                f"int8 kernels), not {options.precision}"
            )
    if options.backend == "tensorrt":
        if device.type != "cuda":
            raise StartupError(f"backend tensorrt needs a CUDA device, not {device}")
        if options.channels_last:
            raise StartupError("backend tensorrt picks its own memory layouts: drop channels_last")
        _import_tensorrt()
    _check_precision(options.precision, device)


def _require_known(value: str, known: Sequence[str], what: str) -> None:
    if value not in known:
        raise StartupError(f"unknown {what} {value!r:.40}; use one of {', '.join(known)}")


def _check_precision(precision: Precision, device: torch.device) -> None:
    if device.type == "cpu":
        wanted = _NATIVE_CPU_FEATURES[precision]
        capabilities = torch.cpu.get_capabilities()
        if wanted and not any(capabilities.get(feature) for feature in wanted):
            raise StartupError(
                f"precision {precision} on this CPU ({capabilities.get('cpu_name', 'unknown')}) "
                f"would be emulated, far slower than fp32: it lacks {' and '.join(wanted)}. "
                "Use fp32, or int8 for speed on the CPU"
            )
    elif (
        device.type == "cuda"
        and precision == "bf16"
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise StartupError(f"precision bf16 is not supported natively by {device}; use fp16")


def _import_tensorrt() -> object:
    try:
        return importlib.import_module("torch_tensorrt")
    except ImportError as exc:
        raise StartupError(
            f"backend tensorrt needs torch-tensorrt, which is not installed: {_TENSORRT_HINT} "
            f"(it must be the build for torch {torch.__version__})"
        ) from exc


def _build(
    module: torch.nn.Module,
    options: OptimizeOptions,
    example: torch.Tensor,
    examples: Sequence[torch.Tensor],
    calibration: Iterable[torch.Tensor],
) -> torch.nn.Module:
    """The backend's module; inputs already in the model's dtype and memory format."""
    match options.backend:
        case "eager":
            return module
        case "torchscript":
            return _torchscript(module, example, options.torchscript_method)
        case "compile":
            return _compile(module, options.compile_mode, examples)
        case "tensorrt":
            return _tensorrt(module, examples)
        case "int8":
            quantized = quantize_int8(module, example, calibration)
            with quantization_warnings_silenced():
                return _torchscript(quantized, example, "trace")


def _torchscript(
    module: torch.nn.Module, example: torch.Tensor, method: TorchscriptMethod
) -> torch.nn.Module:
    """Trace or script ``module`` (a ScriptModule as it is), freeze it, optimize it."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", _JIT_DEPRECATION, FutureWarning)
            if isinstance(module, torch.jit.ScriptModule):
                scripted = module
            elif method == "script":
                scripted = torch.jit.script(module)
            else:
                # check_trace would run the model twice more; _verify compares with eager.
                scripted = torch.jit.trace(  # type: ignore[no-untyped-call]
                    module, example, check_trace=False, strict=False
                )
            frozen = torch.jit.freeze(scripted.eval())
            optimized: torch.nn.Module = torch.jit.optimize_for_inference(frozen)
    except Exception as exc:  # torch.jit raises many types; each means "cannot build"
        raise StartupError(f"torchscript ({method}) cannot capture the model: {exc!r}") from exc
    return optimized


def _compile(
    module: torch.nn.Module, mode: str, examples: Sequence[torch.Tensor]
) -> torch.nn.Module:
    """torch.compile with one static graph per batch size, each compiled here.

    Its own recompile limit, one graph per size, keeps the buckets clear of
    torch's global limit (8), and a batch size never warmed up falls back to
    eager instead of compiling mid-stream.
    """
    # torch's overloads of compile lack recompile_limit and isolate_recompiles.
    compiled: torch.nn.Module = torch.compile(  # type: ignore[call-overload]
        module, mode=mode, dynamic=False, recompile_limit=len(examples), isolate_recompiles=True
    )
    built = _InferenceTensorsOnly(compiled)
    for batch in examples:
        _run_example(built, batch, "torch.compile")
    return built


class _InferenceTensorsOnly(torch.nn.Module):
    """Passes ``compiled`` inference tensors only, copying any other batch.

    torch.compile's guards tell a tensor made under inference mode (what
    preprocessing returns) from one made outside it (a staging buffer passed
    through as it is): without this, each would compile a graph of its own.
    """

    def __init__(self, compiled: torch.nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, batch: torch.Tensor) -> object:
        return self.compiled(batch if batch.is_inference() else batch.clone())


def _tensorrt(module: torch.nn.Module, examples: Sequence[torch.Tensor]) -> torch.nn.Module:
    """One TensorRT engine for the range of batch sizes, optimized for the largest.

    Explicit typing: the engine computes in the dtype the weights and inputs
    already have, TensorRT's replacement for its deprecated precision flags.
    """
    torch_tensorrt: object = _import_tensorrt()
    sizes = [batch.shape[0] for batch in examples]
    item = tuple(examples[0].shape[1:])
    spec = torch_tensorrt.Input(  # type: ignore[attr-defined]
        min_shape=(min(sizes), *item),
        opt_shape=(max(sizes), *item),
        max_shape=(max(sizes), *item),
        dtype=examples[0].dtype,
    )
    try:
        built: torch.nn.Module = torch_tensorrt.compile(  # type: ignore[attr-defined]
            module, ir="dynamo", inputs=[spec], use_explicit_typing=True
        )
    except Exception as exc:  # torch-tensorrt raises many types; each means "cannot build"
        raise StartupError(f"torch-tensorrt cannot compile the model: {exc!r}") from exc
    return built


def _run_example(module: torch.nn.Module, batch: torch.Tensor, what: str) -> object:
    """``module(batch)`` under inference mode; ``StartupError`` if it raises."""
    try:
        with torch.inference_mode():
            return module(batch)
    except Exception as exc:  # whatever the model raises, it cannot start
        hint = _INDUCTOR_CPU_HINT if what == "torch.compile" and batch.device.type == "cpu" else ""
        raise StartupError(
            f"{what} fails on an example batch of shape {list(batch.shape)} "
            f"{batch.dtype}: {exc!r}{hint}"
        ) from exc


def _verify(
    built: torch.nn.Module, options: OptimizeOptions, example: torch.Tensor, reference: object
) -> None:
    """``built`` must give eager's structure, shapes and dtypes, and its values within tolerance."""
    what = f"backend {options.backend} ({options.precision})"
    output = _run_example(built, example, what)
    out_leaves, out_spec = tree_flatten(output)
    ref_leaves, ref_spec = tree_flatten(reference)
    if out_spec != ref_spec or [_signature(t) for t in out_leaves] != [
        _signature(t) for t in ref_leaves
    ]:
        raise StartupError(
            f"{what} returns {_describe(out_leaves)} where the eager model returns "
            f"{_describe(ref_leaves)}"
        )
    if options.backend == "int8":
        return  # int8 is judged by top-1 agreement on real data (bench/backend_bench.py)
    error = max_relative_error(output, reference)
    if error > TOLERANCE[options.precision]:
        raise StartupError(
            f"{what} differs from eager by {error:.3g} of the outputs' scale on the example "
            f"batch; {options.precision} allows {TOLERANCE[options.precision]}"
        )


def _signature(leaf: object) -> object:
    if isinstance(leaf, torch.Tensor):
        return (tuple(leaf.shape), leaf.dtype)
    return type(leaf)


def _describe(leaves: list[object]) -> str:
    return ", ".join(str(_signature(leaf)) for leaf in leaves) or "nothing"
