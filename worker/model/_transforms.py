"""Pre- and post-processing around the model, batch-wise.

A ``Preprocess`` turns a batch already on the model's device into the
model's input. A ``Postprocess`` turns the model's output for a batch of B
into B dicts of CPU tensors, one per request, sharing memory only with the
other rows of the batch (one copy of each output, made for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import torch

from torchkafka.codecs import DTYPES
from torchkafka.worker._errors import StartupError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PREPROCESS_FORMS = ("none", "imagenet")
POSTPROCESS_FORMS = ("raw", "topk:K")

#: The input dtypes (wire names) each preprocessing can take, the first its default:
#: ``imagenet`` scales uint8 pixels, or normalizes floating images already in [0, 1];
#: ``none`` hands the model what came, so any dtype (float32 unless set).
PREPROCESS_DTYPES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "none": ("float32", *(name for name in DTYPES if name != "float32")),
        "imagenet": ("uint8", "float16", "bfloat16", "float32", "float64"),
    }
)


class Preprocess(Protocol):
    """Model input from a batch on the model's device."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class Postprocess(Protocol):
    """Per-request CPU outputs from the model's output for ``batch_size`` requests.

    Raises ``ValueError`` when the output does not have the expected form.
    """

    def __call__(self, output: object, batch_size: int) -> list[dict[str, torch.Tensor]]: ...


class PassThrough:
    """``none``: the batch is the model's input."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class ImagenetNormalize:
    """``imagenet``: [B, 3, H, W] images to float32 normalized with ImageNet's mean and std.

    uint8 pixels are scaled to [0, 1] first. Floating images are taken to be
    in [0, 1] already (torchvision's convention: ToTensor, then Normalize), so
    they are only normalized. Other dtypes raise ``ValueError``. The output is
    a new tensor; the input is never written to.
    """

    def __init__(self) -> None:
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as x * scale + shift: one pass, one new tensor.
        self._constants = (1 / (255 * std), 1 / std, -mean / std)
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(
                f"imagenet preprocessing needs [batch, 3, height, width] images, "
                f"got shape {list(batch.shape)}"
            )
        uint8_scale, float_scale, shift = self._constants_on(batch.device)
        if batch.dtype == torch.uint8:
            return torch.mul(batch, uint8_scale).add_(shift)  # uint8 * float32 -> float32
        if batch.is_floating_point():
            return torch.mul(batch.to(torch.float32), float_scale).add_(shift)
        raise ValueError(
            f"imagenet preprocessing needs uint8 or floating images, got {batch.dtype}"
        )

    def _constants_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._on_device:
            self._on_device[device] = tuple(c.to(device, torch.float32) for c in self._constants)
        return self._on_device[device]


class RawOutputs:
    """``raw``: every output as it is, split per request.

    A tensor is named ``output``; a dict keeps its names; a tuple or list of
    tensors is named ``output_0``, ``output_1``, ...
    """

    def __call__(self, output: object, batch_size: int) -> list[dict[str, torch.Tensor]]:
        return split_rows(_named_outputs(output), batch_size)


class TopK:
    """``topk:K``: softmax probabilities (float32) and indices (int64) of the K top classes.

    The model must return one logits tensor [batch, classes]; each request
    gets ``{"indices": [K], "probs": [K]}``, most probable first.
    """

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, output: object, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            raise ValueError(
                f"topk:{self.k} needs the model to return one [batch, classes] tensor, "
                f"got {_describe(output)}"
            )
        if output.shape[1] < self.k:
            raise ValueError(f"topk:{self.k}, but the model gives {output.shape[1]} classes")
        probs, indices = torch.softmax(output, dim=1, dtype=torch.float32).topk(self.k, dim=1)
        return split_rows({"indices": indices, "probs": probs}, batch_size)


def parse_preprocess(text: str) -> Preprocess:
    """The preprocessing ``none`` or ``imagenet`` names; ``StartupError`` otherwise."""
    if text == "none":
        return PassThrough()
    if text == "imagenet":
        return ImagenetNormalize()
    raise _unknown_preprocess(text)


def _unknown_preprocess(text: str) -> StartupError:
    return StartupError(
        f"unknown preprocessing {text!r:.40}; use one of {', '.join(PREPROCESS_FORMS)}"
    )


def model_dtype(preprocess: str, input_dtype: str | None) -> str:
    """The one dtype (a wire name) a worker takes for its model input: ``input_dtype``, or
    the preprocessing's default (``imagenet``: uint8; ``none``: float32).

    ``StartupError`` for an unknown name, or one the preprocessing cannot take.
    """
    accepted = PREPROCESS_DTYPES.get(preprocess)
    if accepted is None:
        raise _unknown_preprocess(preprocess)
    if input_dtype is None:
        return accepted[0]
    if input_dtype not in DTYPES:
        raise StartupError(
            f"unknown input_dtype {input_dtype!r:.40}; use one of {', '.join(DTYPES)}"
        )
    if input_dtype not in accepted:
        raise StartupError(
            f"{preprocess} preprocessing cannot take {input_dtype} inputs; "
            f"set input_dtype to one of {', '.join(accepted)}"
        )
    return input_dtype


def parse_postprocess(text: str) -> Postprocess:
    """The postprocessing ``raw`` or ``topk:K`` (K >= 1) names; ``StartupError`` otherwise."""
    if text == "raw":
        return RawOutputs()
    name, _, k = text.partition(":")
    if name == "topk" and k.isdecimal() and int(k) >= 1:
        return TopK(int(k))
    raise StartupError(
        f"unknown postprocessing {text!r:.40}; use one of {', '.join(POSTPROCESS_FORMS)} "
        "with K a positive integer"
    )


def split_rows(
    outputs: Mapping[str, torch.Tensor], batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """One dict per batch row, of contiguous CPU tensors: views of one copy of each output.

    Each output must have a first dimension of ``batch_size``. Each is
    copied once, to the CPU and contiguous, and the rows view that copy: no
    row aliases a buffer the model or the caller reuses. (A row keeps its
    batch's copy alive; the worker encodes rows at once. A copy per row cost
    more than the rest of splitting a small model's batch.)
    """
    rows: list[dict[str, torch.Tensor]] = [{} for _ in range(batch_size)]
    for name, tensor in outputs.items():
        if tensor.dim() == 0 or tensor.shape[0] != batch_size:
            raise ValueError(
                f"output {name!r} has shape {list(tensor.shape)}; "
                f"expected a first (batch) dimension of {batch_size}"
            )
        copy = tensor.to("cpu", copy=True, memory_format=torch.contiguous_format)
        for row, value in zip(rows, copy.unbind(0), strict=True):
            row[name] = value
    return rows


def _named_outputs(output: object) -> dict[str, torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return {"output": output}
    if (
        isinstance(output, Mapping)
        and output
        and all(
            isinstance(name, str) and isinstance(value, torch.Tensor)
            for name, value in output.items()
        )
    ):
        return dict(output)
    if (
        isinstance(output, tuple | list)
        and output
        and all(isinstance(v, torch.Tensor) for v in output)
    ):
        return {f"output_{i}": value for i, value in enumerate(output)}
    raise ValueError(
        "raw outputs must be a tensor, or a non-empty dict (str keys) or tuple of tensors, "
        f"got {_describe(output)}"
    )


def _describe(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {list(output.shape)}"
    return f"a {type(output).__name__}"
