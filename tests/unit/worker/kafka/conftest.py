"""The loop harness as a fixture: every loop made is closed after its test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.unit.worker.kafka.loops import Loop


@pytest.fixture
def make_loop() -> Iterator[Callable[..., Loop]]:
    loops: list[Loop] = []

    def make(**kwargs: object) -> Loop:
        loop = Loop(**kwargs)  # type: ignore[arg-type]
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()
