"""The guard stops a worker that dead-letters too much, not one that sees a few."""

import pytest

from torchkafka.worker._errors import DeadLetterLimitExceeded
from torchkafka.worker.pipeline import DeadLetterGuard


def test_consecutive_dead_letters_past_the_limit_stop() -> None:
    guard = DeadLetterGuard(max_ratio=1.0, window=1000, max_consecutive=3)
    for _ in range(3):
        guard.record(True)
    guard.record(False)  # a success resets the run
    for _ in range(3):
        guard.record(True)
    with pytest.raises(DeadLetterLimitExceeded, match="4 dead letters in a row"):
        guard.record(True)


def test_ratio_applies_to_a_full_window_only() -> None:
    guard = DeadLetterGuard(max_ratio=0.5, window=4, max_consecutive=100)
    guard.record(True)  # 1 of 1 dead: over the ratio, but the window is not full yet
    for outcome in (False, False, False, True):
        guard.record(outcome)  # window F, F, F, T: 1 of 4
    guard.record(True)  # F, F, T, T: 2 of 4, at the limit, not over it
    with pytest.raises(DeadLetterLimitExceeded, match="3 of the last 4"):
        guard.record(True)  # F, T, T, T


def test_old_outcomes_leave_the_window() -> None:
    guard = DeadLetterGuard(max_ratio=0.5, window=4, max_consecutive=100)
    for outcome in (True, True, False, False, False, False, True, True):
        guard.record(outcome)  # never more than 2 of the last 4


@pytest.mark.parametrize(
    ("ratio", "window", "consecutive"), [(0.0, 10, 10), (1.5, 10, 10), (0.5, 0, 10), (0.5, 10, 0)]
)
def test_invalid_limits_are_refused(ratio: float, window: int, consecutive: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        DeadLetterGuard(ratio, window, consecutive)
