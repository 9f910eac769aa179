"""Operating the worker: health and readiness endpoints, metrics, logging setup."""

from torchkafka.worker.ops._health import Health, health_endpoints
from torchkafka.worker.ops._logging import LogFormat, configure_logging
from torchkafka.worker.ops._metrics import RetryKind, WorkerMetrics

__all__ = [
    "Health",
    "LogFormat",
    "RetryKind",
    "WorkerMetrics",
    "configure_logging",
    "health_endpoints",
]
