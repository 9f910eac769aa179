"""The model runtime: preprocess -> forward -> postprocess for one batch at a time.

A batch runs in two steps, so that a caller can stage the next batch while
the device works: ``launch`` issues the forward pass (on CUDA it returns
without waiting for the GPU; on the CPU the forward pass is done when it
returns) and ``complete`` waits for it and postprocesses. With batch buckets
a batch of n runs at its bucket's size, the rows after the n real ones being
zeros, and only the first n rows of the output reach postprocessing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
import torch
from torch.utils._pytree import tree_map_only

from torchkafka.codecs import ModelInfo
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model._buckets import Buckets
from torchkafka.worker.model._cuda_graphs import CudaGraphs
from torchkafka.worker.model._cuda_streams import CudaStreams
from torchkafka.worker.model._loader import LoadedModel
from torchkafka.worker.model._transforms import Postprocess, Preprocess

log = structlog.get_logger(__name__)

ExampleShapes = Sequence[tuple[tuple[int, ...], torch.dtype]]
"""(item shape without the batch dimension, dtype) of the inputs to warm up."""


@dataclass(frozen=True, slots=True)
class Launched:
    """A batch whose forward pass is issued: the output for its ``count`` real rows.

    The output may be read once ``done`` has completed (None: at once).
    """

    output: object
    count: int
    done: torch.cuda.Event | None


class ModelRuntime:
    """Runs a loaded model on batches; it knows its device, not how the model was optimized.

    Constructing it sets torch's intra-op thread count for this process
    (see ``cpu_threads``). On a CUDA device it makes its own copy and compute
    streams, and with buckets (fixed shapes) turns ``cudnn.benchmark`` on.
    ``cuda_graphs`` captures a CUDA graph per bucket and example shape during
    ``warmup`` and replays it for batches of that shape; it needs CUDA and buckets.
    """

    def __init__(
        self,
        model: LoadedModel,
        preprocess: Preprocess,
        postprocess: Postprocess,
        device: torch.device,
        *,
        num_threads: int | None = None,
        processes: int = 1,
        buckets: Buckets | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        cuda = device.type == "cuda"
        self.model = model
        self.device = device
        self.buckets = buckets
        self.num_threads = cpu_threads(num_threads, processes)
        #: Whether ``launch`` returns before the device is done, so that a caller
        #: gains by launching the next batch before completing this one.
        self.pipelined = cuda
        self._preprocess = preprocess
        self._postprocess = postprocess
        self._streams = CudaStreams(device) if cuda else None
        self._graphs: CudaGraphs | None = None
        if cuda_graphs:
            if not cuda or buckets is None:
                raise StartupError("cuda_graphs needs a CUDA device and batch buckets")
            self._graphs = CudaGraphs(self._eager, buckets.sizes, device)
        torch.set_num_threads(self.num_threads)
        if cuda and buckets is not None:
            torch.backends.cudnn.benchmark = True

    @property
    def info(self) -> ModelInfo:
        """The model's name and version, as results report them."""
        return ModelInfo(self.model.name, self.model.version)

    def rows_for(self, count: int) -> int:
        """The rows a batch of ``count`` runs with: its bucket, or ``count`` without buckets."""
        return count if self.buckets is None else self.buckets.bucket_for(count)

    def smaller_batch(self, count: int) -> int:
        """A batch limit to fall back to after ``count`` rows ran out of memory.

        Half of ``count``; with buckets, the bucket below the one ``count``
        ran at (a batch runs in its bucket's memory, whatever its size), or
        half when that was the smallest.
        """
        smaller = None if self.buckets is None else self.buckets.below(self.rows_for(count))
        return count // 2 if smaller is None else smaller

    def warmup(self, example_shapes: ExampleShapes, batch_sizes: Sequence[int] = ()) -> float:
        """Run a zero batch per example shape and batch size; the seconds it took (also logged).

        ``batch_sizes`` defaults to the buckets (a batch of 1 without
        buckets). With ``cuda_graphs``, each shape's graphs are captured after
        its eager runs. Any failure is a ``StartupError``: a model that cannot
        run its batch sizes must not start consuming.
        """
        sizes = batch_sizes or (self.buckets.sizes if self.buckets else (1,))
        start = time.perf_counter()
        for shape, dtype in example_shapes:
            for size in sizes:
                with self._startup_step("warm-up", size, shape, dtype):
                    self.infer(torch.zeros((size, *shape), dtype=dtype))
            if self._graphs is not None:
                for size in reversed(self._graphs.sizes):  # largest first: see CudaGraphs
                    with self._startup_step("CUDA graph capture", size, shape, dtype):
                        example = torch.zeros((size, *shape), dtype=dtype, device=self.device)
                        with torch.inference_mode():
                            self._graphs.capture(example)
        seconds = time.perf_counter() - start
        log.info(
            "model warmed up",
            model=self.model.name,
            version=self.model.version,
            seconds=round(seconds, 3),
            shapes=[f"{list(shape)} {dtype}" for shape, dtype in example_shapes],
            batch_sizes=list(sizes),
            cuda_graphs=len(self._graphs or ()),
        )
        return seconds

    def infer(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One dict of CPU tensors per row of ``batch``, none aliasing ``batch`` or the model.

        ``launch`` then ``complete``; a batch between buckets is padded into a
        new tensor first (the inference thread stages batches padded already).
        The caller may reuse ``batch`` when this returns.
        """
        count = batch.shape[0]
        padding = self.rows_for(count) - count
        if padding:
            batch = torch.cat([batch, batch.new_zeros((padding, *batch.shape[1:]))])
        return self.complete(self.launch(batch, count))

    def launch(self, batch: torch.Tensor, count: int) -> Launched:
        """Issue the forward pass on ``batch``, whose first ``count`` rows are real.

        ``batch`` has ``rows_for(count)`` rows, those after ``count`` zeros. It
        may be a pinned staging buffer, copied to the device without blocking:
        do not write to it before ``complete`` has returned (or raised). The
        forward pass runs under ``torch.inference_mode()``. Exceptions from
        the model propagate unchanged, including ``torch.cuda.OutOfMemoryError``.
        """
        rows = batch.shape[0]
        if rows != self.rows_for(count):
            raise ValueError(f"{count} real rows run as {self.rows_for(count)}; got {rows} rows")

        def real_rows(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[:count] if tensor.dim() > 0 and tensor.shape[0] == rows else tensor

        with torch.inference_mode():
            if self._streams is None:
                return Launched(
                    tree_map_only(torch.Tensor, real_rows, self._forward(batch)), count, None
                )
            with self._streams.computing():
                output = self._forward(self._streams.to_device(batch))
                host, done = self._streams.to_host(tree_map_only(torch.Tensor, real_rows, output))
        return Launched(host, count, done)

    def complete(self, launched: Launched) -> list[dict[str, torch.Tensor]]:
        """One dict of CPU tensors per real row of a launched batch, none aliasing its buffers.

        Waits for the batch's event (never for the whole device). The results
        are ordinary tensors; postprocessing errors (``ValueError``) propagate.
        """
        if launched.done is not None:
            launched.done.synchronize()
        return self._postprocess(launched.output, launched.count)

    def _forward(self, inputs: torch.Tensor) -> object:
        return self._eager(inputs) if self._graphs is None else self._graphs.run(inputs)

    def _eager(self, inputs: torch.Tensor) -> object:
        return self.model.module(self._preprocess(inputs))

    @contextmanager
    def _startup_step(
        self, step: str, size: int, shape: tuple[int, ...], dtype: torch.dtype
    ) -> Iterator[None]:
        """Re-raise any failure inside as a ``StartupError`` naming ``step`` and the batch."""
        try:
            yield
        except Exception as exc:  # whatever the model raises, it cannot start
            oom = isinstance(exc, torch.cuda.OutOfMemoryError)
            hint = " (out of memory: use smaller batch sizes)" if oom else ""
            raise StartupError(
                f"{step} of {self.model.name} failed on a batch of {size} x "
                f"{list(shape)} {dtype}{hint}: {exc!r}"
            ) from exc


def cpu_threads(num_threads: int | None, processes: int) -> int:
    """``num_threads``, else this process's CPUs shared among ``processes`` workers (>= 1)."""
    if processes < 1:
        raise StartupError(f"the number of worker processes must be >= 1, got {processes}")
    if num_threads is not None:
        if num_threads < 1:
            raise StartupError(f"num_threads must be >= 1, got {num_threads}")
        return num_threads
    return max(1, _available_cpus() // processes)


def _available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
