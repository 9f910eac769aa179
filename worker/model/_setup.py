"""From settings to a model ready to serve: load, optimize, wrap in a runtime, warm up.

The worker at start-up, a model reload and ``torchkafka model build`` share
these steps, so that a reloaded or prebuilt model is built exactly as a
started one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchkafka.codecs import DTYPES
from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import ModelSettings
from torchkafka.worker.model._backends import OptimizeOptions, optimize
from torchkafka.worker.model._buckets import Buckets
from torchkafka.worker.model._calibration import load_calibration
from torchkafka.worker.model._loader import LoadedModel, load_model
from torchkafka.worker.model._runtime import ModelRuntime
from torchkafka.worker.model._spec import parse_model_spec
from torchkafka.worker.model._transforms import (
    Preprocess,
    model_dtype,
    parse_postprocess,
    parse_preprocess,
)

#: Rows of the seeded random example batch the optimized model is checked on.
EXAMPLE_SEED = 0


def optimizes(settings: ModelSettings) -> bool:
    """Whether the settings ask for anything but the model as it is (eager, fp32)."""
    return (settings.backend, settings.precision, settings.channels_last) != (
        "eager",
        "fp32",
        False,
    )


def build_runtime(settings: ModelSettings, device: torch.device, processes: int) -> ModelRuntime:
    """The model the settings name, optimized and warmed up on ``device``.

    ``processes`` worker processes share the machine's CPUs (torch threads).

    Warm-up runs every batch bucket (or a batch of one) when ``input_shape``
    is known. Every failure is a ``StartupError``.
    """
    buckets = Buckets(settings.batch_buckets) if settings.batch_buckets else None
    preprocess = parse_preprocess(settings.preprocess)
    runtime = ModelRuntime(
        optimized_model(settings, device, preprocess),
        preprocess,
        parse_postprocess(settings.postprocess),
        device,
        num_threads=settings.torch_threads,
        processes=processes,
        buckets=buckets,
        cuda_graphs=settings.cuda_graphs,
    )
    if settings.input_shape is not None:
        runtime.warmup([(settings.input_shape, DTYPES[input_dtype(settings)])])
    return runtime


def optimized_model(
    settings: ModelSettings, device: torch.device, preprocess: Preprocess
) -> LoadedModel:
    """The loaded model, optimized as the settings say, with its name and version.

    ``preprocess`` is the settings' preprocessing: the model is built and
    checked on preprocessed example (and calibration) batches.
    """
    loaded = load_model(parse_model_spec(settings.spec), settings.weights, device)
    if not optimizes(settings):
        return loaded
    options = OptimizeOptions(
        backend=settings.backend,
        precision=settings.precision,
        channels_last=settings.channels_last,
        compile_mode=settings.compile_mode,
    )
    built = optimize(
        loaded.module,
        options,
        model_input(preprocess, example_rows(settings), device),
        device,
        calibration_batches(settings, preprocess, device),
        batch_sizes=settings.batch_buckets,
    )
    return LoadedModel(built, loaded.name, loaded.version)


def input_dtype(settings: ModelSettings) -> str:
    """The dtype (a wire name) of the model's input: the only one the worker takes for it.

    ``input_dtype``, or the preprocessing's default; ``StartupError`` for one
    it cannot take.
    """
    return model_dtype(settings.preprocess, settings.input_dtype)


def example_rows(settings: ModelSettings) -> torch.Tensor:
    """A seeded random batch of ``max_batch_size`` inputs as requests carry them."""
    if settings.input_shape is None:
        raise StartupError(
            f"backend {settings.backend} at {settings.precision}"
            f"{' channels_last' if settings.channels_last else ''} needs --input-shape: "
            "an example input to build and check the optimized model on"
        )
    dtype = input_dtype(settings)
    return torch.stack(
        [
            synthetic_input(settings.input_shape, dtype, EXAMPLE_SEED + row)
            for row in range(settings.max_batch_size)
        ]
    )


def calibration_batches(
    settings: ModelSettings, preprocess: Preprocess, device: torch.device
) -> list[torch.Tensor]:
    """int8 calibration data as preprocessed batches of up to ``max_batch_size`` (else none)."""
    if settings.backend != "int8":
        return []
    if settings.calibration is None:
        raise StartupError("backend int8 needs --calibration (representative inputs)")
    rows = load_calibration(settings.calibration)
    expected = settings.input_shape
    if expected is not None and any(tuple(row.shape) != expected for row in rows):
        shapes = sorted({tuple(row.shape) for row in rows})
        raise StartupError(
            f"calibration data {settings.calibration} has inputs of shape {shapes[:3]}, "
            f"but input_shape is {expected}"
        )
    size = settings.max_batch_size
    return [
        model_input(preprocess, torch.stack(rows[start : start + size]), device)
        for start in range(0, len(rows), size)
    ]


def watched_files(settings: ModelSettings) -> list[Path]:
    """The files a changed model would come in: the artifact and the weights, if any."""
    files = [parse_model_spec(settings.spec).artifact, settings.weights]
    return [file for file in files if file is not None]


def model_input(preprocess: Preprocess, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What the model itself receives for ``rows``: on ``device``, preprocessed."""
    with torch.inference_mode():
        return preprocess(rows.to(device))
