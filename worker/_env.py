"""The one place that reads torchkafka's environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def kafka_bootstrap(environ: Mapping[str, str] = os.environ) -> str:
    """``KAFKA_BOOTSTRAP``, or the local broker's address."""
    return environ.get("KAFKA_BOOTSTRAP") or DEFAULT_KAFKA_BOOTSTRAP


def redis_url(environ: Mapping[str, str] = os.environ) -> str:
    """``REDIS_URL``, or the local Redis."""
    return environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def idle_model_threads_sleep(environ: MutableMapping[str, str] = os.environ) -> None:
    """Let torch's CPU threads sleep between model calls: ``OMP_WAIT_POLICY=PASSIVE``.

    OpenMP's default keeps an intra-op team spinning after each call, on the
    cores the polling thread, librdkafka and Redis need between batches (on
    the 2-core development machine, 30 µs of CPU per message of a tiny model).
    A value the user set is kept. It takes effect only before torch is
    imported: call it first thing in a worker process.
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
