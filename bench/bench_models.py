"""Models for the benchmarks; the worker loads some as ``python:bench_models:FACTORY``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

MLP_FEATURES = 64
MLP_CLASSES = 10
#: W1's input features and hidden width.
SMALL_MLP_FEATURES = 512
SMALL_MLP_HIDDEN = 1024

#: Seeds of ``trained_resnet18``'s training batches: TRAIN_SEED + step, far from
#: the seeds the benches draw calibration, test and timing inputs from.
TRAIN_SEED = 10_000_000
#: Where trained bench models are kept, one file per training recipe.
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchkafka" / "bench"


def mlp() -> nn.Module:
    """A tiny float32 [batch, 64] -> [batch, 10] MLP (9.6k parameters), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(MLP_FEATURES, 128), nn.ReLU(), nn.Linear(128, MLP_CLASSES))
    return module.eval()


def small_mlp() -> nn.Module:
    """A small float32 [batch, 512] -> [batch, 10] MLP, two hidden layers of 1024 (1.6M), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(
            nn.Linear(SMALL_MLP_FEATURES, SMALL_MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(SMALL_MLP_HIDDEN, SMALL_MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(SMALL_MLP_HIDDEN, MLP_CLASSES),
        )
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


class SyntheticImages:
    """An image task: an image of class c is c's smooth prototype, perturbed.

    Prototypes are seeded 3x7x7 Gaussian noise; an image adds Gaussian noise
    of ``noise`` times the prototypes' scale to its class's prototype, is
    upsampled (bicubic) to ``size`` x ``size`` and gets pixel noise of 0.1:
    about ImageNet-normalized pixels in scale. Every ``sample`` draws fresh
    images from its seed, so different seeds give disjoint sets of images
    from one distribution.
    """

    COARSE = 7
    PROTOTYPE_SEED = 6000

    def __init__(self, classes: int, size: int, noise: float) -> None:
        self.classes = classes
        self.size = size
        self.noise = noise
        generator = torch.Generator().manual_seed(self.PROTOTYPE_SEED)
        self.prototypes = torch.randn(classes, 3, self.COARSE, self.COARSE, generator=generator)

    def sample(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [count, 3, size, size], their classes [count])."""
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(self.classes, (count,), generator=generator)
        noise = torch.randn(count, 3, self.COARSE, self.COARSE, generator=generator)
        return self.render(self.prototypes[labels] + self.noise * noise, generator), labels

    def render(self, coarse: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        smooth = F.interpolate(coarse, size=(self.size, self.size), mode="bicubic")
        return smooth + 0.1 * torch.randn(smooth.shape, generator=generator)


@dataclass(frozen=True)
class Recipe:
    """How ``trained_resnet18`` trains: every field goes into the cache key.

    SGD with Nesterov momentum, a linear warm-up then cosine decay of the
    learning rate, cross-entropy; each step a fresh batch of ``SyntheticImages``
    from seed ``TRAIN_SEED + step`` (never reused, so no image is seen twice
    and none of the benches' evaluation seeds is trained on).

    The defaults: 100 classes at 64x64 with noise 2.0, the level at which
    fp32 classifies about 92% of held-out images right (chosen on fp32
    accuracy alone, before int8 was measured; noise 1.0 gave 100%, 2.5 gave
    75%); 300 steps of 64 images, 2-3.5 minutes on 2 CPU cores.
    """

    classes: int = 100
    size: int = 64
    noise: float = 2.0
    steps: int = 300
    batch: int = 64
    lr: float = 0.1
    warmup: int = 30
    weight_decay: float = 5e-4
    seed: int = 0
    version: int = 1  # bump when the training code changes what it produces

    def task(self, size: int | None = None) -> SyntheticImages:
        """The task the model is trained on, rendered at ``size`` (default: the training size)."""
        return SyntheticImages(self.classes, size or self.size, self.noise)

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_resnet18(recipe: Recipe, cache: Path = CACHE) -> nn.Module:
    """resnet18 (``recipe.classes`` outputs) trained on the recipe's task; eval mode.

    Training is seeded and runs on the CPU (a few minutes on 2 cores at
    64x64; the same torch build and thread count give the same weights); they
    are cached as ``cache/resnet18-synthetic-KEY.pt``, KEY a hash of
    ``recipe``, and loaded from there when present.
    """
    path = cache / f"resnet18-synthetic-{recipe.key()}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model: nn.Module = resnet18(num_classes=recipe.classes)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    _train(model, recipe)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".tmp", delete=False) as file:
        torch.save(model.state_dict(), file)
    os.replace(file.name, path)  # whole or absent, even with two benches racing
    return model.eval()


def _train(model: nn.Module, recipe: Recipe) -> None:
    task = recipe.task()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )

    def factor(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for step in range(recipe.steps):  # resnet18 has no dropout: nothing else draws numbers
        images, labels = task.sample(recipe.batch, TRAIN_SEED + step)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == recipe.steps - 1:
            progress = f"step {step} of {recipe.steps}, loss {loss.item():.3f}"
            print(f"training resnet18 ({recipe.key()}): {progress}", file=sys.stderr, flush=True)
    model.eval()
