"""Done-marks written as the broker acknowledges results, on a thread of their own.

A result whose delivery is acknowledged but whose done-mark is not yet written
is the at-least-once duplicate window: a worker killed inside it leaves an
uncommitted record whose id is not done, and the next owner answers it again.
``DoneMarks`` keeps that window to the delivery report's wake-up and one Redis
round trip: its thread waits on the producer's delivery reports and marks
whatever arrived together in one call, so a mark never waits for the polling
loop. The loop takes the marked deliveries (``take``) and commits their offsets.

While Redis is away the marked-to-be deliveries are held and retried (the
loop pauses, seeing ``holding``); fail-open settles them without marks.
"""

from __future__ import annotations

import threading
import time

import structlog

from torchkafka.worker._errors import TransientError, WorkerError
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline._dedup import Dedup
from torchkafka.worker.pipeline._deliveries import Delivery, Outbox, Outcome, result_ids
from torchkafka.worker.pipeline._handoff import Handoff

log = structlog.get_logger(__name__)

#: How long the thread waits for a delivery report before it retries held marks.
REPORT_WAIT_S = 0.05


class DoneMarks:
    """Serves ``outbox``'s delivery reports and writes the results' done-marks in ``dedup``.

    ``fencing_token`` is the worker's current token (the value of each mark);
    the polling loop sets it on each assignment.
    ``start`` runs the marking on a daemon thread; ``mark_now`` marks on the
    caller's thread what the broker has acknowledged so far (the polling loop
    calls it once it flushed the producer, to commit everything before a
    rebalance or shutdown). Both serve reports under one lock, so a delivery is
    marked exactly once and ``mark_now`` returns only when none is half-marked.
    """

    def __init__(
        self,
        outbox: Outbox,
        dedup: Dedup,
        owner: str,
        metrics: WorkerMetrics,
        *,
        fail_open: bool,
    ) -> None:
        self._outbox = outbox
        self._dedup = dedup
        self._owner = owner
        self._metrics = metrics
        self._fail_open = fail_open
        self._serving = threading.Lock()
        self._held: list[Delivery] = []
        self._marked: Handoff[Delivery] = Handoff()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fencing_token = 0
        self.failure: WorkerError | None = None

    @property
    def holding(self) -> bool:
        """Whether acknowledged results wait for Redis to take their done-marks."""
        return bool(self._held)

    def start(self) -> None:
        """Mark on a daemon thread until ``stop``."""
        self._thread = threading.Thread(target=self._run, name="torchkafka-marks", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread after its current round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def mark_now(self, timeout_s: float = 0.0) -> None:
        """Serve reports for up to ``timeout_s``; mark them and the held ones on this thread."""
        with self._serving:
            self._mark(self._outbox.completed(timeout_s))

    def take(self, timeout_s: float = 0.0) -> list[Delivery]:
        """The deliveries settled since the last call, waiting up to ``timeout_s`` for one.

        Failed deliveries come through unmarked, for the caller to act on.
        """
        return self._marked.take(timeout_s)

    def give_up_held(self) -> list[Delivery]:
        """The held deliveries, given up without their done-marks (shutdown, Redis still away)."""
        with self._serving:
            held, self._held = self._held, []
        return held

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.mark_now(REPORT_WAIT_S)
        except WorkerError as exc:
            self.failure = exc
            log.error("writing done-marks failed", error=str(exc), cause=repr(exc.__cause__))
        except BaseException as exc:
            self.failure = WorkerError(f"the done-mark thread failed: {exc!r}")
            self.failure.__cause__ = exc
            log.exception("the done-mark thread failed")

    def _mark(self, arrived: list[Delivery]) -> None:
        deliveries = self._held + arrived
        if not deliveries:
            return
        results = [d for d in deliveries if d.error is None and d.outcome is Outcome.RESULT]
        ids = result_ids(results)
        try:
            if ids:
                self._dedup.mark_done(ids, self._owner, self.fencing_token)
                now = time.monotonic()
                self._metrics.marked_done(now - d.published_s for d in results)
        except TransientError as exc:
            if not self._fail_open:
                if not self._held:
                    log.warning("cannot write done-marks yet; holding commits", error=str(exc))
                self._held = deliveries
                return
            log.warning(
                "cannot write done-marks; committing without them (fail-open)",
                count=len(ids),
                error=str(exc),
            )
        self._held = []
        self._marked.put(deliveries)
