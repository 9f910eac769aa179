"""What the model takes: which request input it reads, and the one dtype it takes for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torchkafka.codecs import DTYPES, EncodedImage, Input, Reason
from torchkafka.worker._reasons import WorkerReason

#: What image inputs decode to (codecs.decode_image: uint8 RGB pixels).
IMAGE_DTYPE = "uint8"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """The request input the model reads (``name``) and its dtype, a wire name.

    A request lacking the input is ``unusable_input``; one whose input has
    another dtype (an image: uint8) is ``unsupported_dtype``. Both are
    dead-lettered before anything runs.
    """

    name: str
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")

    def refusal(self, inputs: Mapping[str, Input]) -> tuple[str, str] | None:
        """Why the model cannot take ``inputs`` (a reason code and the error), or None."""
        value = inputs.get(self.name)
        path = f"$.inputs[{self.name[:64]!r}]"
        if value is None:
            names = ", ".join(sorted(inputs))
            return (
                WorkerReason.UNUSABLE_INPUT,
                f"$.inputs: no input named {self.name!r} (has {names})",
            )
        if isinstance(value, EncodedImage):
            if self.dtype == IMAGE_DTYPE:
                return None
            what = f"{path}: an image ({IMAGE_DTYPE} pixels)"
        else:
            if value.dtype == DTYPES[self.dtype]:
                return None
            what = f"{path}.dtype: {str(value.dtype).removeprefix('torch.')}"
        return (
            Reason.UNSUPPORTED_DTYPE,
            f"{what} is not taken: this worker's model takes {self.dtype} (its input_dtype)",
        )
