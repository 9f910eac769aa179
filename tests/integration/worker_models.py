"""Models for the worker's integration tests (loaded through python:MODULE:FACTORY)."""

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
