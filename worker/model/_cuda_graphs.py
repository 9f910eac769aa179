"""CUDA graphs for fixed-shape batches: captured per bucket at start-up, replayed per batch.

A graph replays the kernels of one forward pass on fixed device memory: a
batch is copied into the graph's static input, and its static output is
overwritten by the graph's next replay. The runtime copies each replay's
output to the host on the same stream before anything else replays, and
replays never overlap (one compute stream), so all of a runtime's graphs
share one memory pool; capturing the largest bucket first lets the smaller
ones reuse its memory.

Capture runs in ``thread_local`` error mode: a model being warmed up for a
reload is captured while the inference thread keeps serving the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor], object]
#: A graph serves one batch shape (bucket included) and dtype.
GraphKey = tuple[tuple[int, ...], torch.dtype]

#: Eager runs on a side stream before capture, as torch's CUDA graph notes advise
#: (lazy initialisation, autotuning and allocations happen outside the graph).
WARMUP_RUNS = 3


class CudaGraphs:
    """One captured graph per batch shape and dtype; other batches run ``forward`` eagerly."""

    def __init__(self, forward: Forward, sizes: tuple[int, ...], device: torch.device) -> None:
        """``sizes``: the batch sizes (buckets) to capture, ascending."""
        self.sizes = sizes
        self._forward = forward
        self._device = device
        self._pool = torch.cuda.graph_pool_handle()
        # One side stream for every warm-up and capture: graphs that share a pool
        # should be captured on the same stream.
        self._stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._graphs: dict[GraphKey, _Graph] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def capture(self, example: torch.Tensor) -> None:
        """Capture ``forward`` on batches shaped like ``example`` (on the device).

        Call under ``torch.inference_mode()``, after a warm-up of this shape.
        """
        static_input = example.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self._device):
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                for _ in range(WARMUP_RUNS):
                    self._forward(static_input)
            with torch.cuda.graph(
                graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"
            ):
                static_output = self._forward(static_input)
        self._graphs[_key(example)] = _Graph(graph, static_input, static_output)

    def run(self, batch: torch.Tensor) -> object:
        """The forward pass on ``batch``: a replay where a graph has its shape, else eager.

        A replayed output is valid until the next replay of that graph (on
        the current stream); copy what is needed before.
        """
        graph = self._graphs.get(_key(batch))
        return self._forward(batch) if graph is None else graph.replay(batch)


@dataclass(frozen=True, slots=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    static_output: object

    def replay(self, batch: torch.Tensor) -> object:
        self.static_input.copy_(batch)
        self.graph.replay()
        return self.static_output


def _key(batch: torch.Tensor) -> GraphKey:
    return (tuple(batch.shape), batch.dtype)
