"""The dtypes the wire format carries, by their wire names."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import torch

#: Wire name -> torch dtype. Wire names are numpy's, plus ``bfloat16``.
DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {
        "bool": torch.bool,
        "uint8": torch.uint8,
        "int8": torch.int8,
        "int16": torch.int16,
        "int32": torch.int32,
        "int64": torch.int64,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "float64": torch.float64,
    }
)


class WireDtype(NamedTuple):
    """What decoding needs to know of a wire dtype, looked up once per tensor."""

    torch: torch.dtype
    #: The numpy dtype whose buffer view torch adopts without a copy. numpy has
    #: no bfloat16, so its bytes are viewed as uint16 and reinterpreted.
    numpy: np.dtype[np.generic]
    itemsize: int


def wire_dtype(name: str) -> WireDtype:
    """The ``WireDtype`` of a name in ``DTYPES``."""
    dtype = DTYPES[name]
    view = np.dtype(np.uint16 if dtype is torch.bfloat16 else name)
    return WireDtype(dtype, view, dtype.itemsize)


_NAMES: Mapping[torch.dtype, str] = MappingProxyType({dt: name for name, dt in DTYPES.items()})


def wire_name(dtype: torch.dtype) -> str | None:
    """The wire name of ``dtype``, or None when the wire format cannot carry it."""
    return _NAMES.get(dtype)
