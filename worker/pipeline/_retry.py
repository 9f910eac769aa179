"""Bounded retries with jittered exponential backoff, one log event per retry.

Shared by the modules that talk to Redis and Kafka: each one passes its own
classification of transient errors and translates what is still failing after
the last attempt into ``TransientError`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
import tenacity


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How long to keep retrying a transient failure.

    The wait before retry ``n`` (1-based) is ``initial_s * 2**(n-1)`` plus up to
    ``initial_s`` of random jitter, capped at ``max_s``. ``max_attempts`` counts
    the first try. No wait starts that would end ``max_total_s`` or more after
    the first try began; the attempts' own duration is bounded by the client's
    timeouts, not here.
    """

    max_attempts: int = 5
    initial_s: float = 0.05
    max_s: float = 1.0
    max_total_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetrySettings.max_attempts must be >= 1")
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("RetrySettings needs 0 < initial_s <= max_s")
        if self.max_total_s <= 0:
            raise ValueError("RetrySettings.max_total_s must be > 0")


def retry_policy(
    settings: RetrySettings,
    *,
    transient: Callable[[BaseException], bool],
    event: str,
    logger_name: str,
    on_retry: Callable[[], None] | None = None,
) -> tenacity.Retrying:
    """A ``tenacity.Retrying`` that retries errors for which ``transient`` is true.

    Each retry logs ``event`` at warning level with ``attempt`` (the one that
    failed), ``error`` and ``sleep_s``, then calls ``on_retry`` if given. When
    attempts or time run out, or on an error that is not transient, the last
    error is re-raised unchanged. The object may be shared between threads
    (tenacity keeps per-call state thread-local).
    """
    log = structlog.get_logger(logger_name)

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        sleep_s = state.next_action.sleep if state.next_action else 0.0
        log.warning(event, attempt=state.attempt_number, error=repr(error), sleep_s=sleep_s)
        if on_retry is not None:
            on_retry()

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        stop=(
            tenacity.stop_after_attempt(settings.max_attempts)
            | tenacity.stop_before_delay(settings.max_total_s)
        ),
        wait=tenacity.wait_exponential_jitter(
            multiplier=settings.initial_s, max=settings.max_s, jitter=settings.initial_s
        ),
        before_sleep=log_retry,
        reraise=True,
    )
