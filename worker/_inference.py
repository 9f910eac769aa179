"""The inference thread: batches in, one result or dead letter per input out.

The polling loop submits batches to a bounded queue (``try_submit`` says no
when it is full, which is the loop's cue to pause its partitions). This
thread checks deadlines, stacks the inputs into a staging buffer, runs the
model, encodes the results and publishes them. A batch that raises is split
in halves until the inputs that fail on their own are found; only those are
dead-lettered. CUDA out-of-memory splits the batch too and lowers
``batch_limit`` for the batches formed after it.
"""

from __future__ import annotations

import queue
import threading
import time

import structlog
import torch

from torchkafka.codecs import Encoder, ModelInfo, Result
from torchkafka.worker._batcher import Batch, BatchItem, StagingPool
from torchkafka.worker._metrics import RetryKind, WorkerMetrics
from torchkafka.worker._publisher import Publisher
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker._records import Admitted
from torchkafka.worker._runtime import ModelRuntime

log = structlog.get_logger(__name__)

_STOP = object()
Outputs = dict[str, torch.Tensor]


class InferenceWorker:
    """Owns the model on one thread; the polling loop only submits batches."""

    def __init__(
        self,
        runtime: ModelRuntime,
        pool: StagingPool,
        publisher: Publisher,
        model: ModelInfo,
        worker_id: str,
        queue_batches: int,
        metrics: WorkerMetrics,
    ) -> None:
        self._runtime = runtime
        self._pool = pool
        self._publisher = publisher
        self._model = model
        self._worker_id = worker_id
        self._metrics = metrics
        self.queue_batches = queue_batches
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_batches)
        self._encoder = Encoder()  # used on the inference thread only
        self._thread = threading.Thread(target=self._run, name="torchkafka-inference", daemon=True)
        self._busy = threading.Event()
        self._room = threading.Event()  # set whenever the thread takes a batch
        #: Set when the thread died; the polling loop re-raises it.
        self.failure: BaseException | None = None
        #: The largest batch known to fit (lowered after an out-of-memory error).
        self.batch_limit: int | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def try_submit(self, batch: Batch[Admitted]) -> bool:
        """Queue ``batch`` unless the queue is full (then the caller should pause)."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    def wait_for_room(self, timeout_s: float) -> None:
        """Block until the thread takes a queued batch, or ``timeout_s`` passes."""
        self._room.wait(timeout_s)
        self._room.clear()

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return self._queue.empty() and not self._busy.is_set()

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
        try:
            while True:
                batch = self._queue.get()
                self._room.set()
                if batch is _STOP:
                    return
                self._busy.set()
                try:
                    self._process(batch)  # type: ignore[arg-type]  # only batches are queued
                finally:
                    self._busy.clear()
        except BaseException as exc:  # surfaced to the polling loop, which stops the worker
            self.failure = exc
            log.exception("inference thread failed")

    def _process(self, batch: Batch[Admitted]) -> None:
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
        if live:
            self._run_items(Batch(tuple(live), batch.capacity))

    def _run_items(self, batch: Batch[Admitted]) -> None:
        started = time.monotonic()
        rows = batch.stack(self._pool)
        try:
            outputs = self._runtime.infer(rows)
        except torch.cuda.OutOfMemoryError:
            self._pool.release(rows)
            self._split(batch, oom=True)
            return
        except Exception as exc:  # the model's own error: find the inputs that cause it
            self._pool.release(rows)
            if len(batch) == 1:
                self._dead_letter(batch.items[0].token, WorkerReason.MODEL_ERROR, repr(exc))
            else:
                self._split(batch, oom=False)
            return
        self._pool.release(rows)
        self._publish(batch, outputs, started, time.monotonic())

    def _dead_letter(self, admitted: Admitted, reason: WorkerReason, error: str) -> None:
        self._publisher.dead_letter(admitted.record, reason, error, request_id=admitted.request.id)

    def _split(self, batch: Batch[Admitted], oom: bool) -> None:
        half = len(batch) // 2
        if oom:
            if len(batch) == 1:
                self._dead_letter(
                    batch.items[0].token,
                    WorkerReason.MODEL_ERROR,
                    "CUDA out of memory on one input",
                )
                return
            self.batch_limit = min(self.batch_limit or len(batch), half)
            log.warning("out of memory; splitting batches", batch_limit=self.batch_limit)
        self._metrics.retry(RetryKind.BATCH_SPLIT)
        for part in (batch.items[:half], batch.items[half:]):
            self._run_items(Batch(part, batch.capacity))

    def _publish(
        self, batch: Batch[Admitted], outputs: list[Outputs], started: float, finished: float
    ) -> None:
        infer_ms = (finished - started) * 1000
        waits_s = [started - item.enqueued_at for item in batch.items]
        self._metrics.batch(len(batch), finished - started, waits_s)
        for item, row, wait_s in zip(batch.items, outputs, waits_s, strict=True):
            record, request = item.token.record, item.token.request
            result = Result(
                id=request.id,
                outputs=row,
                model=self._model,
                timings_ms={
                    "queue_ms": wait_s * 1000,
                    "infer_ms": infer_ms,
                    "total_ms": (finished - record.received_s) * 1000,
                },
                meta=request.meta,
                worker=self._worker_id,
            )
            self._publisher.result(record, request.id, self._encoder.result(result))
