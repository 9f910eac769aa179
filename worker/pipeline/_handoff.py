"""Items handed from threads that produce them to one that takes them all at once."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """``put`` from any thread; ``take`` returns everything put since, waiting for some."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._arrived = threading.Condition()

    def put(self, items: Iterable[T]) -> None:
        """Add ``items``; wakes a waiting ``take``."""
        with self._arrived:
            self._items.extend(items)
            self._arrived.notify_all()

    def take(self, timeout_s: float = 0.0) -> list[T]:
        """Every item put since the last call, waiting up to ``timeout_s`` while there is none."""
        with self._arrived:
            if not self._items and timeout_s > 0:
                self._arrived.wait(timeout_s)
            items, self._items = self._items, []
        return items
