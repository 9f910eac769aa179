"""The values a request and a result message carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from torchkafka.codecs._image import EncodedImage

#: One named model input: a tensor, or an image still in its file format.
Input = torch.Tensor | EncodedImage

WIRE_VERSION = 1


# Request and Result are built once per message on the hot path; a frozen
# dataclass would cost an extra half microsecond each, so they are plain slots.
@dataclass(slots=True)
class Request:
    """One inference request. ``id`` is the idempotency key."""

    id: str
    inputs: Mapping[str, Input]
    meta: Any = None
    deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model produced a result."""

    name: str
    version: str


@dataclass(slots=True)
class Result:
    """The outcome of one request, echoing its ``id`` and ``meta``."""

    id: str
    outputs: Mapping[str, torch.Tensor]
    model: ModelInfo
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    meta: Any = None
    worker: str = ""
