"""Requests awaiting their outcome: futures by request id, each with its own deadline."""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from typing import Generic, TypeVar

from torchkafka.client._errors import ClientError, RequestTimedOut, TooManyInFlight

T = TypeVar("T")


#: Ids whose futures timed out, remembered so that a late outcome is kept for a resubmit.
REMEMBERED_TIMEOUTS = 10_000


class Pending(Generic[T]):
    """At most ``limit`` futures in flight; an id submitted twice shares its outcome.

    An outcome that arrives after its id's futures timed out is kept (for the
    last ``REMEMBERED_TIMEOUTS`` such ids): the worker answers an id once, so
    a resubmission of that id gets the kept outcome at once. Thread-safe:
    callers add, the router resolves, rejects and expires.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit
        self._lock = threading.Lock()
        self._futures: dict[str, list[Future[T]]] = {}
        self._count = 0
        self._deadlines: list[tuple[float, int, str, Future[T]]] = []
        self._sequence = 0
        self._timed_out: OrderedDict[str, None] = OrderedDict()
        self._late: dict[str, tuple[T | None, BaseException | None]] = {}
        self._closed: ClientError | None = None

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def add(self, request_id: str, deadline: float) -> Future[T]:
        """A future for ``request_id``'s outcome; ``RequestTimedOut`` at ``deadline``."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed is not None:
                raise type(self._closed)(str(self._closed))
            late = self._late.pop(request_id, None)
            if late is not None:
                self._timed_out.pop(request_id, None)
                _settle(future, *late)
                return future
            if self._count >= self._limit:
                raise TooManyInFlight(f"{self._count} requests await their results (the limit)")
            self._futures.setdefault(request_id, []).append(future)
            self._count += 1
            self._sequence += 1
            heapq.heappush(self._deadlines, (deadline, self._sequence, request_id, future))
        future.add_done_callback(lambda done: self._forget_cancelled(request_id, done))
        return future

    def resolve(self, request_id: str, outcome: T) -> bool:
        """Give ``request_id``'s futures their outcome; False if none awaited it."""
        taken = self._take(request_id, (outcome, None))
        for future in taken:
            _settle(future, outcome, None)
        return bool(taken)

    def reject(self, request_id: str, error: BaseException) -> bool:
        """Fail ``request_id``'s futures with ``error``; False if none awaited it."""
        taken = self._take(request_id, (None, error))
        for future in taken:
            _settle(future, None, error)
        return bool(taken)

    def expire(self, now: float) -> int:
        """Fail the futures whose deadline is at or before ``now``; how many."""
        expired: list[tuple[str, Future[T]]] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, request_id, future = heapq.heappop(self._deadlines)
                if self._drop(request_id, future):
                    if request_id not in self._futures:  # its last future: remember the id
                        self._remember_timeout(request_id)
                    expired.append((request_id, future))
        for request_id, future in expired:
            _settle(future, None, RequestTimedOut(f"no result for {request_id!r} in time"))
        return len(expired)

    def close(self, error: ClientError) -> None:
        """Fail every future still waiting with ``error``, and refuse new ones with it (the
        client is closing, or can no longer read outcomes)."""
        with self._lock:
            self._closed = error
            waiting = [f for futures in self._futures.values() for f in futures]
            self._futures.clear()
            self._deadlines.clear()
            self._count = 0
        for future in waiting:
            _settle(future, None, error)

    def _take(
        self, request_id: str, outcome: tuple[T | None, BaseException | None]
    ) -> list[Future[T]]:
        """The futures awaiting ``request_id``; none awaiting a timed-out id: keep ``outcome``."""
        with self._lock:
            taken = self._futures.pop(request_id, [])
            self._count -= len(taken)
            if not taken and request_id in self._timed_out:
                self._late[request_id] = outcome
        return taken

    def _forget_cancelled(self, request_id: str, future: Future[T]) -> None:
        """A cancelled future no longer waits: its place is free (its deadline entry stays
        in the heap and is dropped when it comes up)."""
        if future.cancelled():
            with self._lock:
                self._drop(request_id, future)

    def _drop(self, request_id: str, future: Future[T]) -> bool:
        """Stop counting ``future`` as waiting for ``request_id`` (hold the lock); whether
        it was."""
        waiting = self._futures.get(request_id, [])
        if future not in waiting:
            return False
        waiting.remove(future)
        self._count -= 1
        if not waiting:
            del self._futures[request_id]
        return True

    def _remember_timeout(self, request_id: str) -> None:
        """Remember a timed-out id (hold the lock); the oldest are forgotten, outcome too."""
        self._timed_out[request_id] = None
        self._timed_out.move_to_end(request_id)
        while len(self._timed_out) > REMEMBERED_TIMEOUTS:
            oldest, _ = self._timed_out.popitem(last=False)
            self._late.pop(oldest, None)


def _settle(future: Future[T], outcome: T | None, error: BaseException | None) -> None:
    """Give ``future`` its outcome unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]  # None only with an error
    except InvalidStateError:
        pass  # cancelled by its caller: nobody waits for it
