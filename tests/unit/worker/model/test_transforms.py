"""Pre/post-processing numerics, output naming and per-row independence."""

import pytest
import torch

from torchkafka.codecs import DTYPES
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import IMAGENET_MEAN, IMAGENET_STD, parse_postprocess, parse_preprocess
from torchkafka.worker.model._transforms import (
    PREPROCESS_DTYPES,
    ImagenetNormalize,
    PassThrough,
    RawOutputs,
    TopK,
    model_dtype,
    split_rows,
)

MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def storages(rows: list[dict[str, torch.Tensor]]) -> list[int]:
    return [t.untyped_storage().data_ptr() for row in rows for t in row.values()]


def test_parse_preprocess() -> None:
    assert isinstance(parse_preprocess("none"), PassThrough)
    assert isinstance(parse_preprocess("imagenet"), ImagenetNormalize)
    with pytest.raises(
        StartupError, match="unknown preprocessing 'resize'; use one of none, imagenet"
    ):
        parse_preprocess("resize")


def test_the_model_dtype_defaults_to_the_preprocessings_and_must_be_one_it_takes() -> None:
    assert (model_dtype("none", None), model_dtype("imagenet", None)) == ("float32", "uint8")
    assert model_dtype("none", "int64") == "int64"
    assert model_dtype("imagenet", "float16") == "float16"
    with pytest.raises(StartupError, match="imagenet preprocessing cannot take int16 inputs"):
        model_dtype("imagenet", "int16")
    with pytest.raises(StartupError, match="unknown input_dtype 'float128'"):
        model_dtype("none", "float128")
    with pytest.raises(StartupError, match="unknown preprocessing 'resize'"):
        model_dtype("resize", None)


@pytest.mark.parametrize("name", list(DTYPES))
def test_imagenet_runs_every_dtype_it_is_said_to_take_and_refuses_the_others(name: str) -> None:
    batch = torch.zeros(1, 3, 2, 2, dtype=DTYPES[name])
    if name in PREPROCESS_DTYPES["imagenet"]:
        assert ImagenetNormalize()(batch).dtype == torch.float32
    else:
        with pytest.raises(ValueError, match="imagenet preprocessing needs uint8 or floating"):
            ImagenetNormalize()(batch)


def test_none_passes_the_batch_through() -> None:
    batch = torch.zeros(2, 3)
    assert parse_preprocess("none")(batch) is batch


def test_imagenet_by_hand() -> None:
    """Pixel 0 -> -mean/std and 255 -> (1 - mean)/std, per channel."""
    batch = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    batch[..., 1] = 255
    out = ImagenetNormalize()(batch)
    expected = [
        [[-0.485 / 0.229, (1 - 0.485) / 0.229]],
        [[-0.456 / 0.224, (1 - 0.456) / 0.224]],
        [[-0.406 / 0.225, (1 - 0.406) / 0.225]],
    ]
    torch.testing.assert_close(out, torch.tensor([expected]))


def test_imagenet_scales_uint8_and_normalizes() -> None:
    batch = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=generator())
    original = batch.clone()
    out = ImagenetNormalize()(batch)
    assert out.dtype == torch.float32
    assert out.shape == batch.shape
    expected = (batch.double() / 255 - MEAN) / STD
    torch.testing.assert_close(out, expected.float(), atol=1e-6, rtol=1e-6)
    assert torch.equal(batch, original)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_imagenet_takes_floats_as_already_scaled(dtype) -> None:
    batch = torch.rand(2, 3, 4, 4, generator=generator()).to(dtype)
    original = batch.clone()
    out = ImagenetNormalize()(batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ((batch.double() - MEAN) / STD).float(), atol=1e-6, rtol=1e-6)
    assert torch.equal(batch, original)


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (3, 4, 4), (2, 4, 4, 3)])
def test_imagenet_needs_nchw_rgb(shape) -> None:
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\] images"):
        ImagenetNormalize()(torch.zeros(shape, dtype=torch.uint8))


def test_imagenet_refuses_other_integer_dtypes() -> None:
    with pytest.raises(ValueError, match=r"uint8 or floating images, got torch\.int32"):
        ImagenetNormalize()(torch.zeros(1, 3, 2, 2, dtype=torch.int32))


def test_parse_postprocess() -> None:
    assert isinstance(parse_postprocess("raw"), RawOutputs)
    topk = parse_postprocess("topk:5")
    assert isinstance(topk, TopK)
    assert topk.k == 5


@pytest.mark.parametrize("text", ["", "topk", "topk:", "topk:0", "topk:-1", "topk:x", "top5"])
def test_invalid_postprocess(text) -> None:
    with pytest.raises(StartupError, match=r"unknown postprocessing .*raw, topk:K"):
        parse_postprocess(text)


def test_raw_tensor_splits_into_rows_of_one_copy() -> None:
    output = torch.randn(4, 3, generator=generator())
    rows = RawOutputs()(output, 4)
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert list(row) == ["output"]
        assert torch.equal(row["output"], output[i])
    pointers = storages(rows)
    assert len(set(pointers)) == 1
    assert output.untyped_storage().data_ptr() not in pointers
    output.fill_(0)
    assert not any(bool(row["output"].eq(0).all()) for row in rows), "rows are not the model's"


def test_raw_names_dict_and_tuple_outputs() -> None:
    a, b = torch.zeros(2, 3), torch.ones(2)
    assert list(RawOutputs()({"logits": a, "score": b}, 2)[0]) == ["logits", "score"]
    for outputs in [(a, b), [a, b]]:
        rows = RawOutputs()(outputs, 2)
        assert list(rows[1]) == ["output_0", "output_1"]
        assert torch.equal(rows[1]["output_1"], b[1])


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ([{"boxes": torch.zeros(1, 4)}], "got a list"),
        ((), "got a tuple"),
        ({}, "got a dict"),
        ({1: torch.zeros(2)}, "got a dict"),
        ("text", "got a str"),
    ],
)
def test_raw_refuses_other_outputs(output, fragment) -> None:
    with pytest.raises(ValueError, match="raw outputs must be") as info:
        RawOutputs()(output, 2)
    assert fragment in str(info.value)


@pytest.mark.parametrize("output", [torch.tensor(1.0), torch.zeros(3, 2)])
def test_outputs_need_the_batch_dimension(output) -> None:
    with pytest.raises(ValueError, match=r"expected a first \(batch\) dimension of 2"):
        RawOutputs()(output, 2)


def test_rows_are_contiguous_cpu_tensors() -> None:
    output = torch.randn(3, 4, 2, generator=generator()).transpose(1, 2)
    rows = split_rows({"y": output}, 3)
    for i, row in enumerate(rows):
        assert row["y"].is_contiguous()
        assert row["y"].device.type == "cpu"
        assert torch.equal(row["y"], output[i])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_topk_equals_torch_topk_of_softmax(dtype) -> None:
    logits = torch.randn(6, 10, generator=generator()).to(dtype)
    rows = TopK(3)(logits, 6)
    expected = torch.topk(torch.softmax(logits.float(), dim=1), 3, dim=1)
    for i, row in enumerate(rows):
        assert set(row) == {"indices", "probs"}
        assert row["indices"].dtype == torch.int64
        assert row["probs"].dtype == torch.float32
        assert torch.equal(row["indices"], expected.indices[i])
        assert torch.equal(row["probs"], expected.values[i])
    assert len(set(storages(rows))) == 2  # a copy of each output


def test_topk_needs_enough_classes() -> None:
    with pytest.raises(ValueError, match="topk:5, but the model gives 2 classes"):
        TopK(5)(torch.zeros(1, 2), 1)


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        (torch.zeros(2, 3, 4), "got a tensor of shape [2, 3, 4]"),
        ({"logits": torch.zeros(2, 3)}, "got a dict"),
    ],
)
def test_topk_needs_one_logits_tensor(output, fragment) -> None:
    with pytest.raises(
        ValueError, match=r"needs the model to return one \[batch, classes\]"
    ) as info:
        TopK(1)(output, 2)
    assert fragment in str(info.value)
