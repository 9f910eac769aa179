"""InputSpec: the model's input by name, in the one dtype the worker takes."""

import pytest
import torch

from torchkafka.codecs import encoded_image
from torchkafka.codecs.testing import png_bytes
from torchkafka.worker.pipeline import InputSpec

IMAGE = encoded_image(png_bytes())


def test_the_input_in_its_dtype_is_taken() -> None:
    assert InputSpec("x", "float32").refusal({"x": torch.zeros(2), "y": torch.zeros(1)}) is None
    assert InputSpec("x", "uint8").refusal({"x": torch.zeros(2, dtype=torch.uint8)}) is None


def test_a_missing_input_is_unusable() -> None:
    assert InputSpec("x", "float32").refusal({"b": torch.zeros(1), "a": torch.zeros(1)}) == (
        "unusable_input",
        "$.inputs: no input named 'x' (has a, b)",
    )


@pytest.mark.parametrize("dtype", [torch.int16, torch.int64, torch.float16, torch.float64])
def test_a_tensor_of_another_dtype_is_unsupported(dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    assert InputSpec("x", "uint8").refusal({"x": torch.zeros(3, dtype=dtype)}) == (
        "unsupported_dtype",
        f"$.inputs['x'].dtype: {name} is not taken: this worker's model takes uint8 "
        "(its input_dtype)",
    )


def test_an_image_is_taken_only_by_a_uint8_model() -> None:
    assert InputSpec("x", "uint8").refusal({"x": IMAGE}) is None
    assert InputSpec("x", "float32").refusal({"x": IMAGE}) == (
        "unsupported_dtype",
        "$.inputs['x']: an image (uint8 pixels) is not taken: this worker's model takes "
        "float32 (its input_dtype)",
    )


def test_an_unknown_dtype_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'float128'"):
        InputSpec("x", "float128")
