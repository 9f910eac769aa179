"""The one place that reads torchkafka's environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def kafka_bootstrap(environ: Mapping[str, str] = os.environ) -> str:
    """``KAFKA_BOOTSTRAP``, or the local broker's address."""
    return environ.get("KAFKA_BOOTSTRAP") or DEFAULT_KAFKA_BOOTSTRAP


def redis_url(environ: Mapping[str, str] = os.environ) -> str:
    """``REDIS_URL``, or the local Redis."""
    return environ.get("REDIS_URL") or DEFAULT_REDIS_URL
