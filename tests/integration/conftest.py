"""Fixtures shared by the worker's integration tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


class Topics:
    """A worker's input (4 partitions), output (4) and dead-letter topics, new per test."""

    def __init__(self, new_topic: Callable[..., str]) -> None:
        self.input = new_topic(partitions=4)
        self.output = new_topic(partitions=4)
        self.dead_letters = new_topic()


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    """New topics, already listed by the broker (``ensure_topics`` waits for that)."""
    return Topics(new_topic)
