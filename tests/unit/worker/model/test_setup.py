"""From settings to a served model: the backend is applied, checked and warmed up."""

import os
from pathlib import Path
from typing import Any

import pytest
import structlog
import torch

from tests.support import tiny_models
from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import ModelSettings
from torchkafka.worker.model import build_runtime, watched_files

CPU = torch.device("cpu")


settings = tiny_models.tiny_config


def inputs(rows: int) -> torch.Tensor:
    return torch.randn((rows, tiny_models.FEATURES), generator=torch.Generator().manual_seed(7))


def outputs(config: ModelSettings, batch: torch.Tensor) -> torch.Tensor:
    rows = build_runtime(config, CPU, processes=1).infer(batch)
    return torch.stack([row["output"] for row in rows])


def test_torchscript_gives_the_eager_results() -> None:
    batch = inputs(5)
    expected = tiny_models.tiny_mlp()(batch).detach()
    traced = settings(backend="torchscript", input_shape=(tiny_models.FEATURES,))
    torch.testing.assert_close(outputs(traced, batch), expected, rtol=1e-5, atol=1e-6)
    runtime = build_runtime(traced, CPU, processes=1)
    assert isinstance(runtime.model.module, torch.jit.ScriptModule)
    assert runtime.info.name == tiny_models.FACTORY  # optimizing keeps name and version


def test_int8_is_calibrated_on_the_given_file(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.pt"
    torch.save(inputs(64), calibration)
    config = settings(backend="int8", input_shape=(tiny_models.FEATURES,), calibration=calibration)
    batch = inputs(8)
    expected = tiny_models.tiny_mlp()(batch).detach()
    got = outputs(config, batch)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert not torch.equal(got, expected)  # int8 arithmetic, not the float model


def test_buckets_are_warmed_up_and_pad_batches() -> None:
    config = settings(batch_buckets=(2, 8), input_shape=(tiny_models.FEATURES,))
    with structlog.testing.capture_logs() as logs:
        runtime = build_runtime(config, CPU, processes=1)
    warmups = [entry for entry in logs if entry["event"] == "model warmed up"]
    assert [entry["batch_sizes"] for entry in warmups] == [[2, 8]]
    assert runtime.rows_for(3) == 8
    batch = inputs(3)
    got = torch.stack([row["output"] for row in runtime.infer(batch)])
    torch.testing.assert_close(got, tiny_models.tiny_mlp()(batch).detach())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "torchscript"}, "backend torchscript at fp32 needs --input-shape"),
        ({"channels_last": True}, "channels_last needs --input-shape"),
        (
            {"backend": "int8", "input_shape": (tiny_models.FEATURES,)},
            "backend int8 needs --calibration",
        ),
        (
            {"backend": "torchscript", "input_shape": (4,), "input_dtype": "float128"},
            "unknown input_dtype 'float128'",
        ),
        (
            {"preprocess": "imagenet", "input_shape": (3, 4, 4), "input_dtype": "int64"},
            "imagenet preprocessing cannot take int64 inputs",
        ),
    ],
)
def test_settings_that_cannot_build_a_model(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(StartupError, match=message):
        build_runtime(settings(**overrides), CPU, processes=1)


def test_calibration_inputs_must_have_the_input_shape(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.pt"
    torch.save(torch.randn(16, 5), calibration)
    config = settings(backend="int8", input_shape=(4,), calibration=calibration)
    with pytest.raises(
        StartupError, match=r"inputs of shape \[\(5,\)\], but input_shape is \(4,\)"
    ):
        build_runtime(config, CPU, processes=1)


def test_the_files_a_reload_watches(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    assert watched_files(settings()) == []
    assert watched_files(settings(weights=weights)) == [weights]
    artifact = tmp_path / "m.pt"
    assert watched_files(settings(model=f"torchscript:{artifact}")) == [artifact]


def test_torch_threads_set_the_models_thread_count_else_the_cpus_are_shared() -> None:
    assert build_runtime(settings(torch_threads=1), CPU, processes=1).num_threads == 1
    assert torch.get_num_threads() == 1
    shared = build_runtime(settings(), CPU, processes=len(os.sched_getaffinity(0)))
    assert shared.num_threads == 1
