"""Models for the benchmarks; the worker loads some as ``python:bench_models:FACTORY``."""

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models import resnet18

MLP_FEATURES = 64
MLP_CLASSES = 10


def mlp() -> nn.Module:
    """A tiny float32 [batch, 64] -> [batch, 10] MLP (9.6k parameters), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(MLP_FEATURES, 128), nn.ReLU(), nn.Linear(128, MLP_CLASSES))
    return module.eval()


def resnet18_with_measured_batchnorm(batches: Iterable[torch.Tensor]) -> nn.Module:
    """Seeded random-init resnet18 whose BatchNorm statistics are averaged over ``batches``.

    The init's running mean 0 and variance 1 let activations drift in scale
    from layer to layer, unlike a trained model's; statistics measured on
    realistic inputs keep them in range, so its outputs are not near-ties.
    Returned in train mode, with gradients off, for the caller to finish.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: nn.Module = resnet18()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model
