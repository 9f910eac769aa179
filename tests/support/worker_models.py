"""Models for the worker's integration tests (loaded through python:MODULE:FACTORY)."""

import os
import time

import torch
from torch import nn

POISON = 666.0


class PoisonSensitiveLinear(nn.Module):
    """A fixed linear layer that raises on any row whose first value is POISON."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(3, 4, generator=generator))
            self.linear.bias.copy_(torch.randn(3, generator=generator))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if bool((batch[:, 0] == POISON).any()):
            raise ValueError("poison input")
        output: torch.Tensor = self.linear(batch)
        return output


def poison_sensitive_linear() -> nn.Module:
    return PoisonSensitiveLinear()


class CrashesOnPoison(PoisonSensitiveLinear):
    """The same linear layer; on a row whose first value is POISON the process dies at once
    (``os._exit``: no exception, no cleanup, as after a segfault or an OOM kill)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if bool((batch[:, 0] == POISON).any()):
            os._exit(1)
        output: torch.Tensor = self.linear(batch)
        return output


def crashes_on_poison() -> nn.Module:
    return CrashesOnPoison()


#: How long SlowLinear sleeps per batch: a stream of a few hundred requests then
#: takes seconds, long enough to stop a worker or Redis in the middle of it.
SLOW_BATCH_S = 0.02


#: How long a batch of very_slow_linear takes: longer than the short claim leases of
#: the lease-renewal test.
VERY_SLOW_BATCH_S = 1.0


class SlowLinear(PoisonSensitiveLinear):
    """The same linear layer, without the poison check, taking ``batch_s`` per batch."""

    def __init__(self, batch_s: float = SLOW_BATCH_S) -> None:
        super().__init__()
        self.batch_s = batch_s

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(self.batch_s)
        output: torch.Tensor = self.linear(batch)
        return output


def slow_linear() -> nn.Module:
    return SlowLinear()


def very_slow_linear() -> nn.Module:
    return SlowLinear(VERY_SLOW_BATCH_S)


class ChannelMeans(nn.Module):
    """uint8 images [batch, 3, height, width] to their per-channel means, float32 [batch, 3]."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.float().mean(dim=(2, 3))


def channel_means() -> nn.Module:
    return ChannelMeans()


#: A row whose first value is FLAKY fails for FLAKY_S seconds after the model first saw it
#: (its second value tells rows apart): a transient error, which a retry tier outlasts.
FLAKY = 777.0
FLAKY_S = 1.5


class FlakyLinear(PoisonSensitiveLinear):
    """The same linear layer: POISON rows always fail, FLAKY rows fail for a while."""

    def __init__(self) -> None:
        super().__init__()
        self._first_seen: dict[float, float] = {}

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        now = time.monotonic()
        for row in batch[batch[:, 0] == FLAKY]:
            first = self._first_seen.setdefault(float(row[1]), now)
            if now - first < FLAKY_S:
                raise RuntimeError("transient failure")
        return super().forward(batch)


def flaky_linear() -> nn.Module:
    return FlakyLinear()
