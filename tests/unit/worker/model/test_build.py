"""model build: an artifact that loads fast and computes what the optimized model does."""

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support import tiny_models
from torchkafka.worker import cli
from torchkafka.worker._errors import StartupError
from torchkafka.worker.cli import main
from torchkafka.worker.config import ModelSettings
from torchkafka.worker.model import build_artifact, load_model, parse_model_spec

CPU = torch.device("cpu")


def settings(**overrides: Any) -> ModelSettings:
    return tiny_models.tiny_config(**{"input_shape": (tiny_models.FEATURES,), **overrides})


def served(spec: str, batch: torch.Tensor) -> torch.Tensor:
    module = load_model(parse_model_spec(spec), None, CPU).module
    with torch.inference_mode():
        output = module(batch)
    assert isinstance(output, torch.Tensor)
    return output


def batch_of(rows: int) -> torch.Tensor:
    return torch.randn((rows, tiny_models.FEATURES), generator=torch.Generator().manual_seed(3))


def test_torchscript_artifact_serves_the_models_results(tmp_path: Path) -> None:
    output = tmp_path / "mlp.pt"
    spec = build_artifact(settings(backend="torchscript"), CPU, output)
    assert spec == f"torchscript:{output}"
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.pt"]  # no partial file left
    batch = batch_of(5)  # any batch size, not only the example's
    expected = tiny_models.tiny_mlp()(batch).detach()
    torch.testing.assert_close(served(spec, batch), expected, rtol=1e-5, atol=1e-6)


def test_int8_artifact_keeps_the_calibrated_quantization(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.pt"
    torch.save(batch_of(64), calibration)
    output = tmp_path / "mlp-int8.pt"
    spec = build_artifact(settings(backend="int8", calibration=calibration), CPU, output)
    batch = batch_of(8)
    expected = tiny_models.tiny_mlp()(batch).detach()
    got = served(spec, batch)
    assert not torch.equal(got, expected)  # int8 arithmetic, not the float model
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.slow
def test_compile_artifact_is_an_aoti_package_for_every_batch_size(tmp_path: Path) -> None:
    output = tmp_path / "mlp.pt2"
    spec = build_artifact(settings(backend="compile"), CPU, output)
    assert spec == f"aoti:{output}"
    model = tiny_models.tiny_mlp()
    for rows in (1, 3, 8):
        batch = batch_of(rows)
        torch.testing.assert_close(served(spec, batch), model(batch).detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "output", "message"),
    [
        ({"backend": "eager"}, "m.pt", "not eager: tensorrt engines are built at start-up"),
        ({"backend": "compile"}, "m.pt", "must end in .pt2"),
        ({"backend": "torchscript"}, "missing/m.pt", "is not a folder"),
        ({"backend": "torchscript", "input_shape": None}, "m.pt", "needs --input-shape"),
    ],
)
def test_what_cannot_be_built_is_a_startup_error(
    tmp_path: Path, overrides: dict[str, Any], output: str, message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        build_artifact(settings(**overrides), CPU, tmp_path / output)


def test_a_failed_save_leaves_no_file_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(_module: object, path: Path) -> None:
        Path(path).write_bytes(b"half")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(torch.jit, "save", half_written)
    with pytest.raises(StartupError, match=r"cannot build the model into .*No space left"):
        build_artifact(settings(backend="torchscript"), CPU, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_prints_the_spec_to_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Logging set up here would keep writing to capsys's stream after this test;
    # unconfigured, structlog prints to stdout, before the spec.
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    output = tmp_path / "mlp.pt"
    argv = ["model", "build", "--model", f"python:{tiny_models.FACTORY}", "--device", "cpu"]
    argv += ["--backend", "torchscript", "--input-shape", "4", "--output", str(output)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"torchscript:{output}"
    assert main([*argv[:-4], "--backend", "tensorrt", "--output", str(output)]) == 2
    assert "model build makes artifacts for" in capsys.readouterr().err


def test_a_file_that_is_no_aoti_package_is_refused(tmp_path: Path) -> None:
    package = tmp_path / "broken.pt2"
    package.write_bytes(b"not a zip archive")
    with pytest.raises(StartupError, match="cannot load AOTInductor package"):
        load_model(parse_model_spec(f"aoti:{package}"), None, CPU)
