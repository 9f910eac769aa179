"""Bounds that decoding enforces before it allocates anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torchkafka.codecs._dtypes import DTYPES, WireDtype, wire_dtype
from torchkafka.codecs._sizes import MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    """What a decoder accepts. The defaults suit image and embedding models.

    ``max_message_bytes`` bounds every allocation msgpack makes; the other limits
    are checked on declared sizes before any tensor or image buffer exists.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_id_bytes: int = 256
    max_inputs: int = 16
    max_dims: int = 8
    max_elements: int = 1 << 26
    max_image_pixels: int = 1 << 26
    dtypes: frozenset[str] = field(default_factory=lambda: frozenset(DTYPES))
    _allowed: Mapping[str, WireDtype] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = self.dtypes - DTYPES.keys()
        if unknown:
            raise ValueError(f"unknown dtype names in Limits.dtypes: {sorted(unknown)}")
        for name in ("max_message_bytes", "max_id_bytes", "max_inputs", "max_elements"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1")
        allowed = MappingProxyType({n: wire_dtype(n) for n in self.dtypes})
        object.__setattr__(self, "_allowed", allowed)

    def allowed_dtype(self, name: str) -> WireDtype | None:
        """The dtype for wire name ``name`` if this whitelist accepts it."""
        return self._allowed.get(name)


DEFAULT_LIMITS: Limits = Limits()
