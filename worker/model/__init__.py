"""The model: specs, loading, optimizing backends, the batch runtime, reloads, ahead-of-time builds.

It knows tensors and devices only: nothing here imports Kafka, Redis or the
pipeline (a test checks it).
"""

from torchkafka.worker.model._backends import OptimizeOptions, optimize
from torchkafka.worker.model._buckets import Buckets
from torchkafka.worker.model._build import build_artifact
from torchkafka.worker.model._calibration import load_calibration
from torchkafka.worker.model._loader import LoadedModel, load_model, resolve_device
from torchkafka.worker.model._reload import Reloader
from torchkafka.worker.model._runtime import Launched, ModelRuntime, cpu_threads
from torchkafka.worker.model._setup import build_runtime, input_dtype, watched_files
from torchkafka.worker.model._spec import ModelSpec, parse_model_spec
from torchkafka.worker.model._transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    parse_postprocess,
    parse_preprocess,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Buckets",
    "Launched",
    "LoadedModel",
    "ModelRuntime",
    "ModelSpec",
    "OptimizeOptions",
    "Reloader",
    "build_artifact",
    "build_runtime",
    "cpu_threads",
    "input_dtype",
    "load_calibration",
    "load_model",
    "optimize",
    "parse_model_spec",
    "parse_postprocess",
    "parse_preprocess",
    "resolve_device",
    "watched_files",
]
