"""Worker processes of a fault scenario: the integration tests' ``WorkerProcess``, killed
or stopped the way an orchestrator would, with what that did kept."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.streams import WorkerProcess

MODEL = "python:tests.support.worker_models:poison_sensitive_linear"


class FaultWorker(WorkerProcess):
    """One ``torchkafka run`` process (one worker), its log in ``log_path``."""

    def __init__(self, name: str, log_path: Path, args: list[str]) -> None:
        super().__init__(log_path, args)
        self.name = name
        self.killed_at: float | None = None  # wall clock, seconds
        self.exit_code: int | None = None

    def crash(self) -> None:
        """SIGKILL; the time is kept to attribute duplicates to it."""
        self.killed_at = time.time()
        self.kill()

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM; the exit code, kept (fails the test if it takes over ``timeout_s``)."""
        self.exit_code = self.terminate_and_wait(timeout_s)
        return self.exit_code

    def reap(self) -> None:
        """Kill it if it still runs (test teardown)."""
        if self.alive():
            self.kill()

    def assigned(self) -> bool:
        """Whether it joined the group (an assignment, even an empty one)."""
        return bool(self.events("assigned"))

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log event, in order (``events`` picks one name)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
        return found

    def describe(self) -> str:
        return f"--- {self.name} ({self.log_path}) ---\n{self.log_tail(30)}"


def event_time(event: dict[str, Any]) -> float:
    """A log event's time (its ISO ``timestamp``), as seconds since the epoch."""
    return datetime.fromisoformat(str(event.get("timestamp"))).timestamp()
