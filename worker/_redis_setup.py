"""Redis at start-up: the dedup store's client, waiting for it, and readiness's check.

A worker that may not run without Redis (``redis_outage = "pause"``) waits for
it within the start-up deadline, and its readiness follows whether Redis
still answers a PING.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, closing
from functools import partial

import redis
import structlog
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from torchkafka.worker._errors import StartupError, TransientError
from torchkafka.worker.config import DedupSettings, WorkerConfig
from torchkafka.worker.ops import Health, WorkerMetrics
from torchkafka.worker.pipeline import DedupStore, RetrySettings

log = structlog.get_logger(__name__)

#: How often start-up pings a Redis that does not answer.
REDIS_RETRY_S = 0.5
#: Redis errors that mean it answered, refusing the worker (the store's ping names them).
REDIS_REFUSALS = (rx.AuthenticationError, rx.AuthorizationError, rx.ExternalAuthProviderError)


def dedup_store(
    config: WorkerConfig,
    me: str,
    metrics: WorkerMetrics,
    health: Health,
    cleanup: ExitStack,
    deadline: float,
) -> DedupStore:
    """The Redis-backed dedup store, its connection closed with ``cleanup``.

    Unless the worker may fail open (and run without Redis), Redis must answer
    by ``deadline``, and readiness follows whether it still does.
    """
    settings = config.dedup
    client = cleanup.enter_context(closing(redis_client(settings, me)))
    if settings.redis_outage == "pause":
        _wait_for_redis(client, config.operations.startup_timeout_s, deadline)
        health.watch(partial(redis_problem, client))
    dedup = DedupStore(
        client,
        namespace=config.dedup_namespace,
        done_ttl_s=settings.dedup_ttl_s,
        claim_ttl_ms=settings.claim_ttl_ms,
        retry=RetrySettings(),
        metrics=metrics,
        state_loss=settings.redis_state_loss,
    )
    health.watch(dedup.state_problem)
    try:
        dedup.ping()
    except TransientError as exc:
        log.warning("redis does not answer yet; consumption waits for it", error=str(exc))
    return dedup


def redis_client(settings: DedupSettings, name: str) -> redis.Redis:
    # The DedupStore's retry policy alone decides how long a call may take.
    password = settings.redis_password.reveal() if settings.redis_password else None
    return redis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        client_name=f"torchkafka/{name}",
    )


def _wait_for_redis(client: redis.Redis, timeout_s: float, deadline: float) -> None:
    """PING Redis until it answers, even with a refusal; a ``StartupError`` at ``deadline``."""
    while (error := _redis_not_reached(client)) is not None:
        if time.monotonic() >= deadline:
            raise StartupError(f"redis does not answer within {timeout_s:g} s: {error}") from error
        time.sleep(REDIS_RETRY_S)


def _redis_not_reached(client: redis.Redis) -> rx.RedisError | None:
    """The error of a PING that did not reach Redis; None if Redis answered (a refusal too)."""
    try:
        client.ping()
    except rx.RedisError as exc:
        unreached = isinstance(exc, (rx.ConnectionError, rx.TimeoutError))
        if unreached and not isinstance(exc, REDIS_REFUSALS):
            return exc
    return None


def redis_problem(client: redis.Redis) -> str | None:
    """Readiness: why the worker cannot use Redis now (one PING), or None."""
    try:
        client.ping()
    except rx.RedisError as exc:
        return f"redis is unusable: {exc}"
    return None


def accept_dedup_loss(config: WorkerConfig) -> None:
    """Write ``config``'s dedup state key again, after Redis lost its done-marks."""
    with closing(redis_client(config.dedup, "dedup-admin")) as client:
        DedupStore(
            client,
            namespace=config.dedup_namespace,
            done_ttl_s=config.dedup.dedup_ttl_s,
            claim_ttl_ms=config.dedup.claim_ttl_ms,
            retry=RetrySettings(),
        ).accept_loss()
