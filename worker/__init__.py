"""The torchkafka worker: serves a model between a Kafka input topic and its results.

How the code is laid out (each layer imports only the ones listed after it):

    cli, supervisor, app     the command line, N processes, the composition root
    kafka/                   the Kafka edge: polling loop, consumer records, publisher
    pipeline/                record -> result: admission, dedup, batcher, inference
                             thread, settlement, dead-letter guard, image decoding
    model/                   the model: spec, loading, backends, runtime, reloads
    ops/                     health endpoints, metrics, logging
    config/, _errors, _env   settings, the error tree, environment variables
    tools/                   client-side commands (produce, consume, demo); only the
                             CLI imports them

``torchkafka.worker.app.run_worker`` runs one worker in this process and
``torchkafka.worker.supervisor.run_processes`` several; importing this
package itself loads no torch, so the CLI answers ``--help`` quickly.
"""

from torchkafka.worker._env import (
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_REDIS_URL,
    kafka_bootstrap,
    redis_url,
)
from torchkafka.worker._errors import (
    DeadLetterLimitExceeded,
    DedupStateLost,
    DeliveryFailed,
    StartupError,
    TransientError,
    WorkerError,
)
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.config import Backend, Precision, WorkerConfig, load_config

__all__ = [
    "DEFAULT_KAFKA_BOOTSTRAP",
    "DEFAULT_REDIS_URL",
    "Backend",
    "DeadLetterLimitExceeded",
    "DedupStateLost",
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
]
