"""``torchkafka model build``: an optimized model saved once, loaded fast by every worker.

    torchscript, int8  the optimized module, traced and frozen: ``torchscript:PATH``
    compile            an AOTInductor package (torch.export, then compiled C++
                       kernels for this device type and CPU ISA): ``aoti:PATH``

A worker started with the printed spec (and ``backend = "eager"``) loads the
artifact in well under a second instead of compiling or calibrating. TensorRT
engines are tied to the GPU and TensorRT version they were built with, so the
tensorrt backend builds at start-up only. The file is written next to its
final name and renamed into place, so a worker watching it never loads half a
file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import structlog
import torch

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import ModelSettings
from torchkafka.worker.model._backends import OptimizeOptions, optimize
from torchkafka.worker.model._loader import load_model
from torchkafka.worker.model._setup import (
    example_rows,
    model_input,
    optimized_model,
)
from torchkafka.worker.model._spec import parse_model_spec
from torchkafka.worker.model._transforms import parse_preprocess

log = structlog.get_logger(__name__)

BUILDABLE = ("torchscript", "int8", "compile")

_JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


def build_artifact(settings: ModelSettings, device: torch.device, output: Path) -> str:
    """Build the model the settings describe into ``output``; the spec that serves it."""
    if settings.backend not in BUILDABLE:
        raise StartupError(
            f"model build makes artifacts for the {', '.join(BUILDABLE)} backends, not "
            f"{settings.backend}: tensorrt engines are built at start-up for the GPU they run "
            "on, and eager needs nothing built"
        )
    if not output.parent.is_dir():
        raise StartupError(f"cannot write {output}: {output.parent} is not a folder")
    preprocess = parse_preprocess(settings.preprocess)
    example = model_input(preprocess, example_rows(settings), device)
    partial = output.with_name(f".{output.stem}.partial{output.suffix or '.pt'}")
    kind = "aoti" if settings.backend == "compile" else "torchscript"
    if kind == "aoti" and output.suffix != ".pt2":
        raise StartupError(f"an AOTInductor package's name must end in .pt2, not {output}")
    try:
        if kind == "aoti":
            _save_aoti(settings, device, example, partial)
        else:
            module = optimized_model(settings, device, preprocess).module
            _save_torchscript(module, example, partial)
        os.replace(partial, output)
    except StartupError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as exc:  # tracing, export, inductor and saving raise many types
        partial.unlink(missing_ok=True)
        raise StartupError(f"cannot build the model into {output}: {exc!r}") from exc
    spec = f"{kind}:{output}"
    log.info("model built", backend=settings.backend, artifact=str(output), spec=spec)
    return spec


def _save_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save ``module``, tracing it first unless it is a ScriptModule already."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", _JIT_DEPRECATION, FutureWarning)
        if not isinstance(module, torch.jit.ScriptModule):
            module = torch.jit.freeze(
                torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
            )
        torch.jit.save(module, path)


def _save_aoti(
    settings: ModelSettings, device: torch.device, example: torch.Tensor, path: Path
) -> None:
    """torch.export the model (precision and memory format applied), then AOTInductor.

    The batch dimension is dynamic from 1 to ``max_batch_size``, so one
    package serves every batch size.
    """
    loaded = load_model(parse_model_spec(settings.spec), settings.weights, device)
    options = OptimizeOptions(precision=settings.precision, channels_last=settings.channels_last)
    module = optimize(loaded.module, options, example, device)
    batch = torch.export.Dim("batch", min=1, max=settings.max_batch_size)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        inductor = {"max_autotune": settings.compile_mode.startswith("max-autotune")}
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs=inductor
        )
