"""Small modules and CPU runtimes for the inference-thread and polling-loop tests."""

from __future__ import annotations

import threading

import torch
from torch import nn

from torchkafka.worker.model import LoadedModel, ModelRuntime, parse_postprocess, parse_preprocess
from torchkafka.worker.model._buckets import Buckets

POISON = -1.0
#: A bound on every wait in these tests.
WAIT_S = 10.0


class Doubling(nn.Module):
    """x * 2; raises ValueError for a batch holding POISON."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == POISON).any()):
            raise ValueError("poisoned")
        return x * 2


class Gated(nn.Module):
    """x * 2 once ``gate`` opens; ``entered`` is set while it waits."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        doubled: torch.Tensor = Doubling()(x)
        return doubled


class Halving(nn.Module):
    """uint8 pixels to float, halved."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 2


def make_runtime(
    module: nn.Module,
    pipelined: bool,
    version: str = "1",
    buckets: Buckets | None = None,
    postprocess: str = "raw",
    kind: type[ModelRuntime] = ModelRuntime,
) -> ModelRuntime:
    rt = kind(
        LoadedModel(module, "m", version),
        parse_preprocess("none"),
        parse_postprocess(postprocess),
        torch.device("cpu"),
        num_threads=1,
        buckets=buckets,
    )
    rt.pipelined = pipelined
    return rt
