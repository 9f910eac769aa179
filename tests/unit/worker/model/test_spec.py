"""Model specs: the four accepted forms parse; anything else names them all."""

import dataclasses

import pytest

from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import ModelSpec, parse_model_spec


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("torchvision:resnet18", "torchvision", "resnet18"),
        ("torchscript:/models/model.pt", "torchscript", "/models/model.pt"),
        ("torchscript:models/a:b.pt", "torchscript", "models/a:b.pt"),
        ("export:model.pt2", "export", "model.pt2"),
        ("python:pkg.models:build", "python", "pkg.models:build"),
        ("python:models:Builder.create", "python", "models:Builder.create"),
        ("  torchvision:resnet18\n", "torchvision", "resnet18"),
    ],
)
def test_accepted_forms(text: str, kind: str, target: str) -> None:
    spec = parse_model_spec(text)
    assert spec == ModelSpec(kind=kind, target=target)  # type: ignore[arg-type]
    assert parse_model_spec(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "resnet18",
        "torchvision:",
        "onnx:model.onnx",
        "Torchvision:resnet18",
        "python:pkg.models",
        "python::build",
        "python:pkg.models:",
        "python:pkg-models:build",
        "python:pkg.models:build:extra",
        "python:pkg..models:build",
    ],
)
def test_invalid_specs_list_the_accepted_forms(text: str) -> None:
    with pytest.raises(StartupError, match="invalid model spec") as info:
        parse_model_spec(text)
    for form in ("torchvision:NAME", "torchscript:PATH", "export:PATH", "python:package.module"):
        assert form in str(info.value)


def test_python_spec_names_its_problem() -> None:
    with pytest.raises(StartupError, match=r"python: needs package\.module:factory"):
        parse_model_spec("python:pkg.models")


def test_spec_is_frozen() -> None:
    spec = parse_model_spec("torchvision:resnet18")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.target = "resnet50"  # type: ignore[misc]
