"""The runtime's CUDA copy pipeline: batches in on a copy stream, outputs out to pinned memory.

Built only for a model on a CUDA device. Work is ordered by events, never by
a device-wide synchronisation:

- ``to_device`` copies a host batch (a pinned staging buffer) on the copy
  stream without blocking the host; the compute stream waits for that copy's
  event. So the copy of batch k+1 overlaps the forward pass of batch k, and
  the forward pass of k+1 queues behind both.
- The forward pass runs on the compute stream (``computing``).
- ``to_host`` copies the outputs into pinned host tensors on the compute
  stream, behind the forward pass, and returns an event that completes when
  they have landed. The input copy comes before it, so once the event has
  completed the host batch may be written again.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map_only


class CudaStreams:
    """A copy stream and a compute stream on one CUDA device."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._copy = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._compute = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]

    def computing(self) -> torch.cuda.StreamContext:
        """Make the compute stream current (a context manager)."""
        return torch.cuda.stream(self._compute)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` on the device, for work queued on the compute stream from now on."""
        with torch.cuda.stream(self._copy):
            on_device = batch.to(self._device, non_blocking=True)
            copied = self._copy.record_event()
        self._compute.wait_event(copied)
        # Allocated on the copy stream, read on the compute stream: the caching
        # allocator must not hand the memory out again before that work is done.
        on_device.record_stream(self._compute)
        return on_device

    def to_host(self, output: object) -> tuple[object, torch.cuda.Event]:
        """``output`` copied into pinned host tensors, and the event that says they are there.

        Read the copies only after ``event.synchronize()``. Their memory comes
        from torch's caching host allocator, so it is pinned once and reused.
        """
        with torch.cuda.stream(self._compute):
            host = tree_map_only(torch.Tensor, _pinned_copy, output)
            # blocking: the waiting thread sleeps instead of spinning on a core.
            done = torch.cuda.Event(blocking=True)  # type: ignore[no-untyped-call]
            done.record(self._compute)
        return host, done


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return pinned.copy_(tensor, non_blocking=True)
