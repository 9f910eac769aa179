"""Synthetic inputs, as the produce command and the model's example batches use them."""

from __future__ import annotations

import pytest
import torch

from torchkafka.codecs.testing import synthetic_input


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [("uint8", 0, 255), ("int8", 0, 127), ("int64", 0, 127), ("bool", 0, 1), ("float32", 0, 1)],
)
def test_synthetic_input_has_the_shape_dtype_and_range_asked_for(
    dtype: str, low: float, high: float
) -> None:
    tensor = synthetic_input([3, 8, 8], dtype)
    assert tensor.shape == (3, 8, 8)
    assert str(tensor.dtype) == f"torch.{dtype}"
    values = tensor.to(torch.float64)
    assert values.min() >= low
    assert values.max() <= high
    assert torch.equal(tensor, synthetic_input([3, 8, 8], dtype))  # seeded


def test_synthetic_input_names_the_dtypes_on_a_typo() -> None:
    with pytest.raises(ValueError, match=r"unknown dtype 'float'.*float32"):
        synthetic_input([1], "float")
