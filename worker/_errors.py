"""Errors of the worker layer, under the project's root ``TorchKafkaError``.

    TorchKafkaError
    └── WorkerError
        ├── StartupError        fatal before consuming: unknown model, missing
        │                       dependency, device that does not exist, bad config
        ├── TransientError      retry with backoff (Redis or broker briefly away)
        │   └── DedupStateLost  Redis lost its done-marks: held until accepted
        ├── DeliveryFailed      the broker did not take a result or dead letter
        │                       within the producer's delivery timeout
        └── DeadLetterLimitExceeded
                                too many dead letters: stop instead of
                                dead-lettering a whole stream after a bad deploy

Foreign exceptions (confluent-kafka, redis, torch) are translated into these
at the module that talks to the library, keeping the original as ``__cause__``.
"""

from __future__ import annotations

from torchkafka.codecs import TorchKafkaError


class WorkerError(TorchKafkaError):
    """Root of the worker's errors."""


class StartupError(WorkerError):
    """The worker cannot start as configured; raised before anything is consumed."""


class TransientError(WorkerError):
    """A dependency failed in a way that retrying later may fix."""


class DedupStateLost(TransientError):
    """Redis no longer holds the dedup state (restarted empty): work waits, even fail-open."""


class DeliveryFailed(WorkerError):
    """The broker did not acknowledge a result or dead letter; ``code`` is librdkafka's name."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class DeadLetterLimitExceeded(WorkerError):
    """Dead letters passed the configured ratio or consecutive count."""
