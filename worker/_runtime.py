"""The model runtime: preprocess -> forward -> postprocess for one batch at a time."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from torchkafka.worker._errors import StartupError
from torchkafka.worker._model_loader import LoadedModel
from torchkafka.worker._processing import Postprocess, Preprocess


class ModelRuntime:
    """Runs a loaded model on batches; one per worker process.

    Constructing it sets torch's intra-op thread count for this process
    (see ``cpu_threads``).
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
    ) -> None:
        self.model = model
        self.device = device
        self.num_threads = cpu_threads(num_threads, processes)
        self._preprocess = preprocess
        self._postprocess = postprocess
        torch.set_num_threads(self.num_threads)

    def warmup(
        self,
        example_shapes: Sequence[tuple[tuple[int, ...], torch.dtype]],
        batch_sizes: Sequence[int],
    ) -> float:
        """Run one zero batch per (item shape, dtype) and batch size; the seconds it took.

        Any failure is a ``StartupError``: a model that cannot run its batch
        buckets must not start consuming.
        """
        start = time.perf_counter()
        for shape, dtype in example_shapes:
            for size in batch_sizes:
                try:
                    self.infer(torch.zeros((size, *shape), dtype=dtype))
                except Exception as exc:  # whatever the model raises, it cannot start
                    oom = isinstance(exc, torch.cuda.OutOfMemoryError)
                    hint = " (out of memory: use smaller batch sizes)" if oom else ""
                    raise StartupError(
                        f"warm-up of {self.model.name} failed on a batch of {size} x "
                        f"{list(shape)} {dtype}{hint}: {exc!r}"
                    ) from exc
        return time.perf_counter() - start

    def infer(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One dict of CPU tensors per row of ``batch``, sharing memory with nothing.

        ``batch`` may be a (pinned) staging buffer: it is copied to the
        device without blocking, and the copy has finished when this returns,
        so the caller may reuse the buffer. The forward pass runs under
        ``torch.inference_mode()``; the results are ordinary tensors.
        Exceptions from the model propagate unchanged, including
        ``torch.cuda.OutOfMemoryError``.
        """
        with torch.inference_mode():
            inputs = self._preprocess(batch.to(self.device, non_blocking=True))
            output = self.model.module(inputs)
        return self._postprocess(output, batch.shape[0])


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
