"""The torchkafka worker: serves a model between a Kafka input topic and its results.

How the code is laid out (each layer imports only the ones listed after it):

    cli, _supervisor, _app   the command line, N processes, the composition root
    kafka/                   the Kafka edge: polling loop, consumer records, publisher
    pipeline/                record -> result: admission, dedup, batcher, inference
                             thread, settlement, dead-letter guard, image decoding
    model/                   the model: spec, loading, backends, runtime, reloads
    ops/                     health endpoints, metrics, logging
    _config, _errors, _env   settings, the error tree, environment variables
    tools/                   client-side commands (produce, consume, demo); only the
                             CLI imports them

``run_worker`` and ``run_processes`` load torch on first use, so that importing
this package (and answering ``--help``) stays quick.
"""

import importlib
from typing import TYPE_CHECKING, Any

from torchkafka.worker._env import (
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_REDIS_URL,
    kafka_bootstrap,
    redis_url,
)
from torchkafka.worker._errors import (
    DeadLetterLimitExceeded,
    DeliveryFailed,
    StartupError,
    TransientError,
    WorkerError,
)
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.config import Backend, Precision, WorkerConfig, load_config

if TYPE_CHECKING:
    from torchkafka.worker._app import run_worker
    from torchkafka.worker._supervisor import run_processes

_LAZY = {"run_worker": "_app", "run_processes": "_supervisor"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_KAFKA_BOOTSTRAP",
    "DEFAULT_REDIS_URL",
    "Backend",
    "DeadLetterLimitExceeded",
    "DeliveryFailed",
    "Precision",
    "StartupError",
    "TransientError",
    "WorkerConfig",
    "WorkerError",
    "WorkerReason",
    "kafka_bootstrap",
    "load_config",
    "redis_url",
    "run_processes",
    "run_worker",
]
