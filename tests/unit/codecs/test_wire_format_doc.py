"""docs/wire-format.md's byte-exact examples are what the codecs read and write."""

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from torchkafka.codecs import (
    Input,
    ModelInfo,
    Result,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
)
from torchkafka.worker.config import ModelSettings
from torchkafka.worker.model import input_dtype
from torchkafka.worker.pipeline import InputSpec

DOC = Path(__file__).parents[3] / "docs" / "wire-format.md"


def taken_by_a_default_worker(inputs: Mapping[str, Input]) -> bool:
    """Whether a worker with the default input settings runs its model on ``inputs``."""
    settings = ModelSettings(spec="torchvision:resnet18")  # any model: the inputs' defaults
    return InputSpec(settings.input_name, input_dtype(settings)).refusal(inputs) is None


def example_bytes(marker: str) -> bytes:
    match = re.search(rf"<!-- {marker} -->\n```\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"no {marker} block in {DOC}"
    return bytes.fromhex(match.group(1))


def test_request_example() -> None:
    data = example_bytes("example-request")
    request = decode_request(data)
    assert (request.id, request.meta, request.deadline_ms) == (
        "req-1",
        {"user": "u1"},
        1767225600000,
    )
    tensor = request.inputs["x"]
    assert isinstance(tensor, torch.Tensor)
    assert torch.equal(tensor, torch.tensor([1.0, -2.5]))
    assert encode_request(request) == data
    assert taken_by_a_default_worker(request.inputs)


def test_result_example() -> None:
    data = example_bytes("example-result")
    result = decode_result(data)
    assert result.model == ModelInfo("mlp", "1")
    assert result.timings_ms == {"queue_ms": 1.5, "infer_ms": 0.75}
    assert (result.id, result.meta, result.worker) == ("req-1", {"user": "u1"}, "w-1")
    assert torch.equal(result.outputs["y"], torch.tensor([0.25]))
    rebuilt = Result(
        id="req-1",
        outputs={"y": torch.tensor([0.25])},
        model=ModelInfo("mlp", "1"),
        timings_ms={"queue_ms": 1.5, "infer_ms": 0.75},
        meta={"user": "u1"},
        worker="w-1",
    )
    assert encode_result(rebuilt) == data


def test_every_reason_code_is_documented() -> None:
    from torchkafka.codecs import Reason
    from torchkafka.worker._reasons import WorkerReason

    text = DOC.read_text()
    for reason in [*Reason, *WorkerReason]:
        assert f"| `{reason.value}` |" in text, reason


def test_the_plain_msgpack_python_example_writes_a_valid_request() -> None:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match
    namespace: dict[str, object] = {}
    exec(match.group(1), namespace)  # noqa: S102 - our own documentation's example
    value = namespace["value"]
    assert isinstance(value, bytes)
    request = decode_request(value)
    assert request.id == "order-42"
    assert taken_by_a_default_worker(request.inputs)
    features = request.inputs["x"]
    assert isinstance(features, torch.Tensor)
    assert (features.dtype, features.shape) == (torch.float32, (3, 224, 224))
