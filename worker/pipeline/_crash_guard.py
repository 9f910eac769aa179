"""The crash-loop guard: a record that keeps killing workers is quarantined, not run again.

A record that kills the process (a segfault in a native kernel, the kernel's
OOM killer) is read again by every restarted worker and kills each one. So
the places (topic, partition, offset) of the records about to run are marked
in a ``RunLog`` (Redis) under a run id of this process's own (random, one per
process lifetime), and the marks of finished places are deleted. Another
run's mark still on a place means that run's process died with it running,
or queued to run.

As the polling thread queues a batch for the inference thread, one
``RunLog.mark_running`` call (``mark_queued``) deletes the marks of the
places finished since the last call and counts, for each place of the batch,
the other runs that marked it; when every count is 0, the batch is marked
and queued ready to run: the round trip is off the inference thread. A batch
with a count above 0 is queued unmarked, and the inference thread screens it
(``screen``) before it launches: a count of ``quarantine_after_crashes`` or
more, the record is dead-lettered (``quarantined``) without running; above 0,
a suspect, which runs alone (nothing else in flight), marked right before;
the clean rest is screened again after its suspects ran. So the innocent
neighbours of a poison record (in its batch, or queued behind it) are
counted once, then run alone and are cleared; only a record that dies alone
each time reaches the limit. A place marked again while it still runs (a
rewind re-reads it) keeps its mark until both runs finished. A thread that
stops on an error (not a death) removes this run's marks.

Redis away: the batch runs unguarded (logged once per outage).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from torchkafka.worker._errors import TransientError, WorkerError
from torchkafka.worker.pipeline._batcher import BatchItem
from torchkafka.worker.pipeline._records import Admitted, Place

log = structlog.get_logger(__name__)

Item = BatchItem[Admitted]

#: How long a place's marks last (a crash loop repeats within minutes).
RUN_MARK_TTL_S = 3600


class RunLog(Protocol):
    """Which runs (process lifetimes) marked which record places; ``DedupStore`` is the Redis one.

    Each call raises ``TransientError`` while the store is away.
    """

    def mark_running(
        self, run_id: str, places: Sequence[Place], finished: Sequence[Place], suspect: bool
    ) -> list[int]:
        """Delete the marks of ``finished``; per place of ``places``, how many other runs marked it.

        Marks ``places`` for ``run_id`` (for ``RUN_MARK_TTL_S``) when every count is 0,
        or whatever the counts when ``suspect``.
        """
        ...

    def forget_run(self, run_id: str, running: Sequence[Place], finished: Sequence[Place]) -> None:
        """Delete the marks of ``finished``, and ``run_id``'s marks of ``running``."""
        ...


@dataclass(frozen=True, slots=True)
class Screening:
    """A batch's inputs by how many runs died running them."""

    clean: tuple[Item, ...]  # marked running (if guarded) when nothing else is listed
    suspects: tuple[Item, ...] = ()
    quarantined: tuple[tuple[Item, int], ...] = ()  # with their counts

    @property
    def all_clean(self) -> bool:
        """Nothing to run alone or quarantine: ``clean`` may run as a batch."""
        return not self.suspects and not self.quarantined


class CrashGuard:
    """Marks batches as they are queued, and screens the rest for the inference thread.

    ``mark_queued`` is the polling thread's; ``screen``, ``running``,
    ``finished`` and ``leave`` the inference thread's. Off, making no call,
    when ``run_log`` is None or ``quarantine_after_crashes`` is 0.
    """

    def __init__(self, run_log: RunLog | None, quarantine_after_crashes: int) -> None:
        if quarantine_after_crashes < 0:
            raise ValueError(
                f"quarantine_after_crashes must be >= 0, got {quarantine_after_crashes}"
            )
        self._run_log = run_log if quarantine_after_crashes else None
        self._limit = quarantine_after_crashes
        #: This process lifetime's id in the marks (host/pid repeats across container restarts).
        self.run_id = uuid.uuid4().hex
        self._lock = threading.Lock()  # for the two below: both threads mark
        self._running: Counter[Place] = Counter()  # marked by this run, times not finished
        self._finished: list[Place] = []  # to unmark with the next call
        self._away = False

    def mark_queued(self, items: Sequence[Item]) -> bool:
        """Mark ``items`` running if no other run marked any; False: ``screen`` them instead.

        Also deletes the marks of what finished since the last call. True, and
        unmarked, when off or Redis is away.
        """
        counts = self._mark([place_of(item.token) for item in items], suspect=False)
        return counts is None or not any(counts)

    def screen(self, items: Sequence[Item]) -> Screening:
        """Sort ``items`` by their counts, marking them running if all are 0.

        Also deletes the marks of what finished since the last call (even
        with no ``items``). All clean, and unmarked, when off or Redis is away.
        """
        places = [place_of(item.token) for item in items]
        counts = self._mark(places, suspect=False)
        if counts is None or not any(counts):
            return Screening(tuple(items))
        clean, suspects, quarantined = [], [], []
        for item, place, crashes in zip(items, places, counts, strict=True):
            if crashes >= self._limit:
                log.error(
                    "quarantined: worker processes died running it", **_fields(item, place, crashes)
                )
                quarantined.append((item, crashes))
            elif crashes:
                log.warning(
                    "a worker process died running it: running it alone",
                    **_fields(item, place, crashes),
                )
                suspects.append(item)
            else:
                clean.append(item)
        return Screening(tuple(clean), tuple(suspects), tuple(quarantined))

    def running(self, item: Item) -> None:
        """Mark suspect ``item`` running, right before it runs alone."""
        self._mark([place_of(item.token)], suspect=True)

    def finished(self, inputs: Iterable[Admitted]) -> None:
        """``inputs`` have their outcome: their marks are deleted with the next call."""
        if self._run_log is None:
            return
        with self._lock:
            for admitted in inputs:
                place = place_of(admitted)
                if self._running[place] > 1:  # marked again meanwhile: that run still needs it
                    self._running[place] -= 1
                    continue
                del self._running[place]
                self._finished.append(place)

    def leave(self) -> None:
        """The inference thread stops on an error, not killed: remove this run's marks."""
        with self._lock:
            if self._run_log is None or not self._running:
                return
            running, finished = list(self._running), self._take_finished()
            self._running.clear()
        try:
            self._run_log.forget_run(self.run_id, running, finished)
        except WorkerError as exc:
            log.warning("cannot remove this worker's crash-loop marks", error=str(exc))

    def _mark(self, places: list[Place], suspect: bool) -> list[int] | None:
        """The counts of ``places`` (marked as the run log decides); None if unguarded."""
        if self._run_log is None:
            return None
        with self._lock:
            finished = self._take_finished()  # dropped if the call fails: the marks expire
        if not places and not finished:
            return []
        try:
            counts = self._run_log.mark_running(self.run_id, places, finished, suspect)
        except TransientError as exc:
            if not self._away:
                log.warning(
                    "redis is away: batches run without the crash-loop guard", error=str(exc)
                )
            self._away = True
            return None
        if self._away:
            log.info("redis is back: batches run with the crash-loop guard")
            self._away = False
        if suspect or not any(counts):
            with self._lock:
                self._running.update(places)
        return counts

    def _take_finished(self) -> list[Place]:
        """The finished places not yet unmarked (hold the lock)."""
        finished, self._finished = self._finished, []
        return finished


def place_of(admitted: Admitted) -> Place:
    """Where ``admitted``'s record is."""
    return admitted.record.place


def quarantine_error(crashes: int) -> str:
    """The dead letter's error text for a record that ``crashes`` worker processes died running."""
    processes = "process" if crashes == 1 else "processes"
    return f"{crashes} worker {processes} died while it ran; quarantined without running it"


def _fields(item: Item, place: Place, crashes: int) -> dict[str, object]:
    topic, partition, offset = place
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "request_id": item.token.request.id,
        "crashes": crashes,
    }
