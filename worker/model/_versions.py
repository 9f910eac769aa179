"""Model versions: short content hashes, so that equal versions compute the same function.

- A model loaded from an artifact file (torchscript, export, aoti), which
  carries its code and its weights: the file's bytes.
- A model built here (torchvision, python), with or without a weights file:
  its state dict after loading (every parameter and buffer: name, dtype,
  shape and bytes), so the same weights give the same version whatever file
  they came in. Such models are built under a fixed seed (``seeded_init``),
  so random initialization gives every worker the same weights too.

Either way: the first ``VERSION_DIGITS`` hex digits of a SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

VERSION_DIGITS = 12
#: The seed of every model built here (the torch CPU generator, and CUDA's).
INIT_SEED = 0


def file_version(path: Path) -> str:
    """The version of the model in the file at ``path``: a hash of its bytes."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:VERSION_DIGITS]


def weights_version(module: torch.nn.Module) -> str:
    """The version of ``module``'s weights: a hash of its state dict.

    A dense tensor counts by its name, dtype, shape and bytes; anything else
    in the state dict (a module's extra state) by its name and ``repr``.
    """
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(f"{name}\0".encode())
        if (
            isinstance(value, torch.Tensor)
            and value.layout is torch.strided
            and not value.is_quantized
        ):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{tensor.dtype}{list(value.shape)}\0".encode())
            digest.update(tensor.view(torch.uint8).numpy().data)
        else:
            digest.update(f"{value!r}\0".encode())
    return digest.hexdigest()[:VERSION_DIGITS]


@contextmanager
def seeded_init() -> Iterator[None]:
    """Draw from torch's generators seeded with ``INIT_SEED``; the CPU generator's state
    is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        yield
