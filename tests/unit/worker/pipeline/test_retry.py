"""retry_policy: bounded attempts and total delay, jittered backoff, one log per retry."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import tenacity
from structlog.testing import capture_logs

from torchkafka.worker.pipeline import RetrySettings
from torchkafka.worker.pipeline._retry import retry_policy


class Flaky(Exception):
    pass


class Failing:
    """Raises ``errors`` in turn, then returns ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(settings: RetrySettings) -> tenacity.Retrying:
    return retry_policy(
        settings,
        transient=lambda error: isinstance(error, Flaky),
        event="thing retry",
        logger_name="test",
    )


def test_recovers_and_logs_each_retry() -> None:
    fn = Failing(Flaky("one"), Flaky("two"))
    with capture_logs() as logs:
        assert policy(RetrySettings(initial_s=0.001, max_s=0.01))(fn) == "ok"
    assert fn.calls == 3
    assert [(log["event"], log["log_level"], log["attempt"]) for log in logs] == [
        ("thing retry", "warning", 1),
        ("thing retry", "warning", 2),
    ]
    assert logs[0]["error"] == "Flaky('one')"


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fn = Failing(*(Flaky(str(n)) for n in range(10)))
    with capture_logs() as logs, pytest.raises(Flaky) as raised:
        policy(RetrySettings(max_attempts=3, initial_s=0.001, max_s=0.01))(fn)
    assert str(raised.value) == "2"
    assert fn.calls == 3
    assert len(logs) == 2


def test_other_errors_are_not_retried() -> None:
    fn = Failing(ValueError("bug"))
    with capture_logs() as logs, pytest.raises(ValueError, match="bug"):
        policy(RetrySettings())(fn)
    assert fn.calls == 1
    assert logs == []


def test_waits_grow_with_jitter_up_to_the_cap() -> None:
    fn = Failing(*(Flaky() for _ in range(5)))
    with capture_logs() as logs:
        policy(RetrySettings(max_attempts=6, initial_s=0.001, max_s=0.005))(fn)
    sleeps = [log["sleep_s"] for log in logs]
    assert 0.001 <= sleeps[0] <= 0.002
    assert 0.002 <= sleeps[1] <= 0.003
    assert 0.004 <= sleeps[2] <= 0.005
    assert sleeps[3:] == [0.005, 0.005]


def test_total_delay_is_bounded() -> None:
    fn = Failing(*(Flaky() for _ in range(1000)))
    start = time.monotonic()
    with pytest.raises(Flaky):
        policy(RetrySettings(max_attempts=1000, initial_s=0.01, max_s=0.01, max_total_s=0.1))(fn)
    assert time.monotonic() - start < 0.1 + 0.05  # + the last sleep's overshoot
    assert fn.calls < 12


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetrySettings(max_attempts=0),
        lambda: RetrySettings(initial_s=0),
        lambda: RetrySettings(initial_s=2, max_s=1),
        lambda: RetrySettings(max_total_s=0),
    ],
)
def test_settings_are_validated(make: Callable[[], RetrySettings]) -> None:
    with pytest.raises(ValueError, match="RetrySettings"):
        make()
