"""Models for bench/worker_bench.py, loaded by the worker as ``python:bench_models:FACTORY``."""

import torch
from torch import nn

MLP_FEATURES = 64
MLP_CLASSES = 10


def mlp() -> nn.Module:
    """A tiny float32 [batch, 64] -> [batch, 10] MLP (9.6k parameters), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(MLP_FEATURES, 128), nn.ReLU(), nn.Linear(128, MLP_CLASSES))
    return module.eval()
