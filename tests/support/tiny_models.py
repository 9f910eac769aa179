"""Tiny models for the model-runtime tests: ``python:`` factories and artifact writers."""

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkafka.worker.config import ModelSettings, build_config

FEATURES = 4
CLASSES = 3
FACTORY = "tests.support.tiny_models:tiny_mlp"

#: Appended to only if a pickle's payload runs (it must not, under weights_only).
UNPICKLED: list[str] = []


def tiny_mlp(seed: int = 0) -> nn.Module:
    """A [batch, 4] -> [batch, 3] MLP with parameters fixed by ``seed``."""
    module = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return module.eval()


def default_init_mlp() -> nn.Module:
    """The same MLP as ``tiny_mlp``, initialized as torch does by default (its global
    generator)."""
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


def returns_int() -> int:
    return 42


def raises() -> nn.Module:
    raise RuntimeError("factory exploded")


class TinyClassifier(nn.Module):
    """[batch, 3, H, W] images -> [batch, 5] logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.conv(x)
        return features.mean(dim=(2, 3))


class Raising(nn.Module):
    """Raises ``error`` on every forward pass."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


class Recording(nn.Module):
    """Identity that records every batch it sees (a copy) and its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.inputs.append(x.clone())
        return x


class SumOverBatch(nn.Module):
    """[batch, F] -> [1, F]: the sum over the batch (not a per-row model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=0, keepdim=True)


class Sleeping(nn.Module):
    """Doubles its input after keeping the GPU busy for ``cycles`` clock cycles."""

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.cycles = cycles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(self.cycles)  # type: ignore[no-untyped-call]
        return x * 2


def record_unpickling() -> str:
    UNPICKLED.append("payload ran")
    return "payload ran"


class Payload:
    """Pickles to a call of ``record_unpickling``: what a malicious file would do."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (record_unpickling, ())


def save_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace and save ``module``; torch.jit's deprecation warnings are expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, path)


def save_exported(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.export ``module`` with a dynamic batch dimension and save it as .pt2."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def tiny_config(**overrides: Any) -> ModelSettings:
    """Model settings serving ``tiny_mlp`` on the CPU; ``overrides`` by setting name."""
    values: dict[str, Any] = {
        "model": f"python:{FACTORY}",
        "input_topic": "in",
        "output_topic": "out",
        "dead_letter_topic": "dlq",
        "device": "cpu",
        "max_batch_size": 8,
    }
    return build_config({**values, **overrides}).model
