"""The inference thread: batches in, one result or dead letter per input out.

The polling loop submits batches to a bounded queue (``try_submit`` says no
when it is full, which is the loop's cue to pause its partitions). This
thread checks deadlines, collects the pixels of image inputs (dead-lettering
those that fail to decode), stacks the inputs into a staging buffer (padded
to the runtime's batch bucket), runs the model, encodes the results and
publishes them. A batch holding images decoded on the device is stacked on
the device instead. Where the runtime is ``pipelined`` (CUDA), one batch stays in
flight: batch k+1 is stacked and launched before the results of batch k are
awaited, so the host's work overlaps the GPU's.

A batch that raises is split in halves until the inputs that fail on their
own are found; only those are dead-lettered. CUDA out-of-memory splits the
batch too and lowers ``batch_limit`` for the batches formed after it.
``swap_runtime`` replaces the model between batches.

With a ``CrashGuard``, each batch is marked running as it is queued (one
Redis call, on the submitting thread); one that holds records worker
processes died running is screened before it launches instead: those are
quarantined or run alone (``_crash_guard``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import torch

from torchkafka.codecs import DecodeError, Encoder, ModelInfo, Reason, Result
from torchkafka.worker._errors import TransientError
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.model import Launched, ModelRuntime
from torchkafka.worker.ops import RetryKind, WorkerMetrics
from torchkafka.worker.pipeline._batcher import Batch, BatchItem, StagingPool
from torchkafka.worker.pipeline._crash_guard import CrashGuard, quarantine_error
from torchkafka.worker.pipeline._deliveries import Publisher, ResultMessage
from torchkafka.worker.pipeline._device_jpeg import DeviceJpeg
from torchkafka.worker.pipeline._pixels import with_pixels
from torchkafka.worker.pipeline._records import Admitted

log = structlog.get_logger(__name__)

_STOP = object()
Outputs = dict[str, torch.Tensor]


#: Tries of one input that runs out of device memory alone, before the worker stops.
OOM_TRIES = 3
#: The wait before the first of those tries; it doubles for each next one.
OOM_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class _Queued:
    """A submitted batch; ``marked``: the crash guard marked it running (no screening left)."""

    batch: Batch[Admitted]
    marked: bool


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A launched batch, with the runtime it runs on and the staging buffer it holds."""

    batch: Batch[Admitted]
    runtime: ModelRuntime
    staged: torch.Tensor | None  # None: stacked on the device, from no buffer
    launched: Launched
    started: float
    queued: bool  # finishing it finishes a batch taken from the queue


class InferenceWorker:
    """Owns the model on one thread; the polling loop only submits batches."""

    def __init__(
        self,
        runtime: ModelRuntime,
        pool: StagingPool,
        publisher: Publisher,
        worker_id: str,
        queue_batches: int,
        metrics: WorkerMetrics,
        device_jpeg: DeviceJpeg | None = None,
        crash_guard: CrashGuard | None = None,
        batch_times: Callable[[int, float], None] | None = None,
    ) -> None:
        """Results report the model name and version of the runtime that computed them.

        ``device_jpeg`` decodes the JPEGs the image pool left encoded;
        ``crash_guard`` marks each batch as it is queued, or screens it before
        it launches (none: unguarded);
        ``batch_times`` is told the size and the seconds of each batch that ran
        (``BatchSizer.ran``).
        """
        self._runtime = runtime
        self._device_jpeg = device_jpeg
        self._guard = crash_guard or CrashGuard(None, 0)
        self._pool = pool
        self._publisher = publisher
        self._worker_id = worker_id
        self._metrics = metrics
        self._batch_times = batch_times
        self.queue_batches = queue_batches
        # unfinished_tasks counts batches queued or held by the thread (task_done when finished).
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_batches)
        self._encoder = Encoder()  # used on the inference thread only
        self._thread = threading.Thread(target=self._run, name="torchkafka-inference", daemon=True)
        self._room = threading.Event()  # set whenever the thread takes a batch
        #: Set when the thread died; the polling loop re-raises it.
        self.failure: BaseException | None = None
        #: The largest batch known to fit (lowered after an out-of-memory error).
        self.batch_limit: int | None = None
        self._progress_at = time.monotonic()  # the thread last took or finished a batch
        self._oom_tries: dict[str, int] = {}  # the input that last ran out of memory alone

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def swap_runtime(self, runtime: ModelRuntime) -> None:
        """Run the batches launched from now on with ``runtime`` (any thread may call this).

        Warm ``runtime`` up first. Batches already launched, and the halves
        of any of them that fails, finish on the runtime they started on;
        every result names the model that computed it.
        """
        old = self._runtime.info
        self._runtime = runtime  # one reference assignment: the thread reads it per batch
        log.info("model swapped", old=_label(old), new=_label(runtime.info))

    def try_submit(self, batch: Batch[Admitted]) -> bool:
        """Queue ``batch`` unless the queue is full (the caller should pause) or the thread died.

        One thread submits. A batch that fits is marked running by the crash
        guard first (a Redis call on this thread; ``WorkerError`` if Redis
        refuses it).
        """
        if not self.has_room() or self.failure is not None:
            return False
        self._queue.put_nowait(_Queued(batch, self._guard.mark_queued(batch.items)))
        return True

    def has_room(self) -> bool:
        """The queue would take a batch now."""
        return not self._queue.full()

    def wait_for_room(self, timeout_s: float) -> None:
        """Block until the thread takes a queued batch, or ``timeout_s`` passes."""
        self._room.wait(timeout_s)
        self._room.clear()

    def stalled_for(self, now: float) -> float:
        """Seconds the thread has held work without taking or finishing a batch; 0 when idle.

        ``now`` is on the ``time.monotonic`` clock.
        """
        if self._queue.unfinished_tasks == 0:
            return 0.0
        return max(0.0, now - self._progress_at)

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return self._queue.unfinished_tasks == 0

    def stop(self, timeout_s: float) -> bool:
        """Finish the queued batches, then end the thread; True if it ended in time."""
        deadline = time.monotonic() + timeout_s
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _run(self) -> None:
        in_flight: _InFlight | None = None
        try:
            while True:
                try:
                    got = self._queue.get(block=in_flight is None)
                except queue.Empty:  # nothing to overlap with the batch in flight
                    got = None
                else:
                    self._room.set()
                self._progress_at = time.monotonic()
                if isinstance(got, _Queued):
                    in_flight = self._advance(got, in_flight)
                    continue
                if in_flight is not None:
                    self._finish(in_flight)
                    in_flight = None
                    self._progress_at = time.monotonic()
                if got is _STOP:
                    self._queue.task_done()
                    return
        except BaseException as exc:  # surfaced to the polling loop, which stops the worker
            self.failure = exc
            log.exception("inference thread failed")
            self._guard.leave()  # a stop on an error is no crash: unmark what was running

    def _advance(self, queued: _Queued, in_flight: _InFlight | None) -> _InFlight | None:
        """Launch ``queued``'s batch, then finish ``in_flight``; what is left in flight.

        The batch stays in flight only on a pipelined runtime. ``in_flight``
        is finished before a failure of the batch is retried, so that its
        device memory is free for the retries, and before a suspect of the
        crash guard runs alone.
        """
        live = self._live(queued.batch)
        if live is not None and not queued.marked:
            live, in_flight = self._screen(live, in_flight)
        if live is not None:
            live = self._with_pixels(live)
        if live is None:  # every input expired, was quarantined, ran alone or failed to decode
            self._queue.task_done()
            return in_flight
        runtime = self._runtime
        try:
            launched = self._launch(live, runtime, queued=True)
        except Exception as exc:
            if in_flight is not None:
                self._finish(in_flight)
            self._recover(live, runtime, exc)
            self._queue.task_done()
            return None
        if in_flight is not None:
            self._finish(in_flight)
        if runtime.pipelined:
            return launched
        self._finish(launched)
        return None

    def _screen(
        self, batch: Batch[Admitted], in_flight: _InFlight | None
    ) -> tuple[Batch[Admitted] | None, _InFlight | None]:
        """What of ``batch`` runs as a batch (marked running), and what is left in flight.

        Quarantined inputs are dead-lettered; suspects run alone, once the
        batch in flight has finished. The rest is screened again afterwards,
        so that it is marked running only once the suspects ran.
        """
        screening = self._guard.screen(batch.items)
        while not screening.all_clean:
            for item, crashes in screening.quarantined:
                admitted = item.token
                self._publisher.dead_letter(
                    admitted.record,
                    WorkerReason.QUARANTINED,
                    quarantine_error(crashes),
                    request_id=admitted.request.id,
                )
            if screening.suspects and in_flight is not None:
                self._finish(in_flight)
                in_flight = None
            for item in screening.suspects:
                self._run_alone(item, batch.capacity)
            screening = self._guard.screen(screening.clean)
        clean = screening.clean
        return (Batch(clean, batch.capacity) if clean else None), in_flight

    def _run_alone(self, item: BatchItem[Admitted], capacity: int) -> None:
        """Run a suspect of the crash guard on its own, marked running right before."""
        self._guard.running(item)
        alone = self._with_pixels(Batch((item,), capacity))
        if alone is not None:
            self._run_now(alone, self._runtime)
        self._progress_at = time.monotonic()

    def _with_pixels(self, batch: Batch[Admitted]) -> Batch[Admitted] | None:
        """``batch`` with its images decoded; halves at a time if the device runs out of memory."""
        try:
            return with_pixels(batch, self._device_jpeg, self._reject)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                self._out_of_memory_alone(batch)
                return self._with_pixels(batch)
            log.warning("out of memory decoding images on the device; decoding halves")
            self._metrics.retry(RetryKind.BATCH_SPLIT)
            half = len(batch) // 2
            halves = (batch.items[:half], batch.items[half:])
            decoded = [self._with_pixels(Batch(items, batch.capacity)) for items in halves]
            items = tuple(item for part in decoded if part is not None for item in part.items)
            return Batch(items, batch.capacity) if items else None

    def _reject(self, admitted: Admitted, error: DecodeError) -> None:
        self._dead_letter(admitted, error.reason, str(error))

    def _live(self, batch: Batch[Admitted]) -> Batch[Admitted] | None:
        """The batch without the inputs whose deadline has passed (dead-lettered); None if empty."""
        now_ms = time.time() * 1000
        live: list[BatchItem[Admitted]] = []
        for item in batch.items:
            deadline_ms = item.token.request.deadline_ms
            if deadline_ms is not None and deadline_ms < now_ms:
                late_ms = now_ms - deadline_ms
                self._dead_letter(
                    item.token,
                    WorkerReason.EXPIRED,
                    f"deadline passed {late_ms:.0f} ms before its batch ran",
                )
            else:
                live.append(item)
        return Batch(tuple(live), batch.capacity) if live else None

    def _launch(self, batch: Batch[Admitted], runtime: ModelRuntime, queued: bool) -> _InFlight:
        """Stack ``batch`` (padded to its bucket) into a staging buffer and launch it.

        A batch holding pixels on the device is stacked on the device.
        """
        started = time.monotonic()
        rows = runtime.rows_for(len(batch))
        tensors = [item.tensor for item in batch.items]
        staged: torch.Tensor | None = None
        if self._device_jpeg is not None and any(not t.is_cpu for t in tensors):
            inputs = self._device_jpeg.stack(tensors, rows)
        else:
            staged = inputs = batch.stack(self._pool, rows)
        try:
            launched = runtime.launch(inputs, len(batch))
        except BaseException:
            self._release(staged)
            raise
        return _InFlight(batch, runtime, staged, launched, started, queued)

    def _release(self, staged: torch.Tensor | None) -> None:
        if staged is not None:
            self._pool.release(staged)

    def _finish(self, flight: _InFlight) -> None:
        """Wait for ``flight``'s results and publish them (or recover from its failure)."""
        try:
            outputs = flight.runtime.complete(flight.launched)
        except Exception as exc:
            self._release(flight.staged)
            self._recover(flight.batch, flight.runtime, exc)
        else:
            self._release(flight.staged)
            self._publish(flight, outputs, time.monotonic())
        if flight.queued:
            self._queue.task_done()

    def _run_now(self, batch: Batch[Admitted], runtime: ModelRuntime) -> None:
        """Launch and finish ``batch`` at once: a part of a failed batch, or a suspect alone."""
        try:
            flight = self._launch(batch, runtime, queued=False)
        except Exception as exc:
            self._recover(batch, runtime, exc)
        else:
            self._finish(flight)

    def _recover(self, batch: Batch[Admitted], runtime: ModelRuntime, exc: Exception) -> None:
        """Split a batch that raised, or dead-letter its one input."""
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            self._split(batch, runtime, oom=True)
        elif len(batch) == 1:
            self._dead_letter(batch.items[0].token, WorkerReason.MODEL_ERROR, repr(exc))
        else:
            self._split(batch, runtime, oom=False)

    def _dead_letter(self, admitted: Admitted, reason: WorkerReason | Reason, error: str) -> None:
        self._publisher.dead_letter(admitted.record, reason, error, request_id=admitted.request.id)
        self._guard.finished((admitted,))

    def _split(self, batch: Batch[Admitted], runtime: ModelRuntime, oom: bool) -> None:
        half = len(batch) // 2
        if oom:
            if len(batch) == 1:
                self._out_of_memory_alone(batch)
                self._run_now(batch, runtime)
                return
            smaller = runtime.smaller_batch(len(batch))
            self.batch_limit = min(self.batch_limit or len(batch), smaller)
            log.warning("out of memory; splitting batches", batch_limit=self.batch_limit)
        self._metrics.retry(RetryKind.BATCH_SPLIT)
        for part in (batch.items[:half], batch.items[half:]):
            self._run_now(Batch(part, batch.capacity), runtime)

    def _out_of_memory_alone(self, batch: Batch[Admitted]) -> None:
        """One input ran out of device memory: free what is cached, wait, and let it run again.

        Out of memory on one input is the device's state (other work, fragmentation),
        not the input's fault, so it is never dead-lettered. After ``OOM_TRIES`` in a
        row it raises ``TransientError``: the worker stops without committing the
        record, and a restarted worker runs it again.
        """
        request_id = batch.items[0].token.request.id
        tries = self._oom_tries.get(request_id, 0) + 1
        if tries > OOM_TRIES:
            raise TransientError(
                f"CUDA out of memory on one input ({request_id!r}) {OOM_TRIES} times in a row; "
                "stopping without committing it"
            )
        self._oom_tries = {request_id: tries}
        log.warning("out of memory on one input; freeing cached memory and retrying", tries=tries)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        time.sleep(OOM_BACKOFF_S * 2 ** (tries - 1))

    def _publish(self, flight: _InFlight, outputs: list[Outputs], finished: float) -> None:
        batch, started = flight.batch, flight.started
        model = flight.runtime.info
        infer_ms = (finished - started) * 1000
        waits_s = [started - item.enqueued_at for item in batch.items]
        self._metrics.batch(len(batch), finished - started, waits_s)
        if self._batch_times is not None:
            self._batch_times(len(batch), finished - started)
        messages = []
        for item, row, wait_s in zip(batch.items, outputs, waits_s, strict=True):
            record, request = item.token.record, item.token.request
            result = Result(
                id=request.id,
                outputs=row,
                model=model,
                timings_ms={
                    "queue_ms": wait_s * 1000,
                    "infer_ms": infer_ms,
                    "total_ms": (finished - record.received_s) * 1000,
                },
                meta=request.meta,
                worker=self._worker_id,
            )
            messages.append(ResultMessage(record, request.id, self._encoder.result(result)))
        self._publisher.results(messages)
        self._guard.finished(item.token for item in batch.items)


def _label(model: ModelInfo) -> str:
    return f"{model.name}:{model.version}"
