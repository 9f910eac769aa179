"""Static int8 post-training quantization for the CPU: FX graph mode, x86 backend.

``torch.fx`` traces the model symbolically; observers inserted by
``prepare_fx`` record activation ranges while calibration batches run through
it (histograms for activations, per-channel min/max for weights); then
``convert_fx`` swaps in int8 kernels (fbgemm/oneDNN through the ``x86``
quantized engine). Conv, Linear and their fused BatchNorm/ReLU neighbours run
in int8; the model's inputs and outputs stay float32.

This is torch's FX graph mode API, deprecated upstream in favour of torchao's
PT2E flow (not installed here, and its x86 path needs ``torch.compile`` at
start-up). It is the static quantizer torch itself still ships, so its
deprecation warnings are silenced here, narrowly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.ao.quantization import (
    QConfig,
    QConfigMapping,
    get_default_qconfig,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.observer import HistogramObserver
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from torchkafka.worker._errors import StartupError

QUANTIZED_ENGINE = "x86"

#: CPU features with int8 dot products that accumulate without saturating.
_VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")

#: (category, message regex) of the warnings torch raises while quantizing:
#: the API's deprecation, the x86 qconfig's ``reduce_range`` and the creation
#: of quantized weight tensors. Inference with the result raises none.
_QUANTIZATION_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"Please use quant_min and quant_max"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other"),
    # torch.jit.TracerWarning: tracing a converted model reads its scales and
    # zero points as Python numbers, constants of the frozen graph as they should be.
    (Warning, r"Converting a tensor to a Python (float|integer)"),
)


@contextmanager
def quantization_warnings_silenced() -> Iterator[None]:
    """Silence the warnings that quantizing, and tracing a quantized model, raise."""
    with warnings.catch_warnings():
        for category, message in _QUANTIZATION_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        yield


def quantize_int8(
    module: torch.nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> torch.nn.Module:
    """``module`` (float32, eval, on the CPU) with int8 weights and activations.

    Every batch of ``calibration`` runs through the observed model once; at
    least one is required. Selects torch's ``x86`` quantized engine for the
    process (``torch.backends.quantized.engine``). Fails with ``StartupError`` when torch.fx cannot
    trace the model (data-dependent control flow, for example) or a
    calibration batch does not run.
    """
    if QUANTIZED_ENGINE not in torch.backends.quantized.supported_engines:
        raise StartupError(
            f"int8 needs torch's {QUANTIZED_ENGINE} quantized engine, which this build of "
            f"torch lacks (it has {torch.backends.quantized.supported_engines})"
        )
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    with quantization_warnings_silenced():
        try:
            observed = prepare_fx(module, _qconfig_mapping(), (example,))
        except Exception as exc:  # torch.fx raises many types; each means "cannot trace"
            raise StartupError(
                "int8 quantization needs a model that torch.fx can trace symbolically "
                f"(no control flow that depends on tensor values); tracing failed: {exc!r}"
            ) from exc
        batches = _calibrate(observed, calibration)
        if batches == 0:
            raise StartupError(
                "int8 quantization needs calibration data: at least one batch of "
                "representative inputs to measure activation ranges on"
            )
        return convert_fx(observed)


def _qconfig_mapping() -> QConfigMapping:
    """torch's x86 defaults, with 8-bit activations where the CPU has VNNI.

    The defaults quantize activations to 7 bits (``reduce_range``) so that
    CPUs without VNNI cannot saturate their 16-bit intermediate sums; with
    VNNI the 8th bit is safe, and cut resnet18's int8 error by about a third.
    """
    mapping = get_default_qconfig_mapping(QUANTIZED_ENGINE)
    capabilities = torch.cpu.get_capabilities()
    if any(capabilities.get(feature) for feature in _VNNI_FEATURES):
        default = get_default_qconfig(QUANTIZED_ENGINE)  # type: ignore[no-untyped-call]
        activation = HistogramObserver.with_args(reduce_range=False)
        mapping.set_global(QConfig(activation, default.weight))  # type: ignore[no-untyped-call]
    return mapping


def _calibrate(observed: torch.nn.Module, calibration: Iterable[torch.Tensor]) -> int:
    """Run every calibration batch through ``observed``; how many there were."""
    count = 0
    with torch.no_grad():
        for count, batch in enumerate(calibration, start=1):
            try:
                observed(batch)
            except Exception as exc:  # whatever the model raises, calibration failed
                raise StartupError(
                    f"int8 calibration batch {count} (shape {list(batch.shape)}, "
                    f"{batch.dtype}) failed: {exc!r}"
                ) from exc
    return count
