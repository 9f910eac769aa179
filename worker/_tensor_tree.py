"""Model outputs as trees: a tensor, or a mapping, tuple or list of them (nested)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def map_tensors(output: object, function: Callable[[torch.Tensor], torch.Tensor]) -> object:
    """``output`` with ``function`` applied to every tensor in it.

    Mappings come back as dicts and tuples (named ones too) as plain tuples;
    anything else is returned as it is, for postprocessing to judge.
    """
    if isinstance(output, torch.Tensor):
        return function(output)
    if isinstance(output, Mapping):
        return {name: map_tensors(value, function) for name, value in output.items()}
    if isinstance(output, tuple):
        return tuple(map_tensors(value, function) for value in output)
    if isinstance(output, list):
        return [map_tensors(value, function) for value in output]
    return output
