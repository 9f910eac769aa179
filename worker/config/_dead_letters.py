"""What happens to records that fail: limits that stop the worker, quarantine, retry tiers."""

from __future__ import annotations

from dataclasses import dataclass

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config._fields import not_negative, positive, setting


@dataclass(frozen=True, slots=True)
class DeadLetterSettings:
    """When dead letters stop the worker instead of draining a stream after a bad deploy,
    and when a record that kills the worker is dead-lettered instead of run again."""

    dead_letter_max_ratio: float = setting("stop when more of the window is dead-lettered", 0.5)
    dead_letter_window: int = setting("messages the ratio is measured over", 1000)
    dead_letter_max_consecutive: int = setting("stop after this many dead letters in a row", 100)
    quarantine_after_crashes: int = setting(
        "dead-letter a record (quarantined) once this many worker processes died while "
        "running it, instead of running it again; 0 turns the crash-loop guard off",
        3,
    )
    retry_delays_s: tuple[int, ...] = setting(
        "retry tiers for model errors, their delays in seconds (e.g. 10,60,600): a record "
        "whose model call fails goes to the retry topic INPUT_TOPIC.retry.N of the next tier, "
        "and `torchkafka retries` sends it back to the input once the delay has passed; after "
        "the last tier it is dead-lettered (default: none, dead-lettered at once)",
        (),
    )

    def __post_init__(self) -> None:
        positive(self, "dead_letter_window", "dead_letter_max_consecutive")
        not_negative(self, "quarantine_after_crashes")
        if any(delay < 1 for delay in self.retry_delays_s):
            raise StartupError(f"retry_delays_s must be >= 1 each, got {self.retry_delays_s}")
        if not 0 < self.dead_letter_max_ratio <= 1:
            raise StartupError(
                f"dead_letter_max_ratio must be in (0, 1], got {self.dead_letter_max_ratio}"
            )
