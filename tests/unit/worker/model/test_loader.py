"""Loading every spec form, the version rule, and a StartupError for each failure."""

import hashlib
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.support import tiny_models
from tests.support.tiny_models import FACTORY, Payload, save_exported, save_torchscript
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import LoadedModel, load_model, parse_model_spec, resolve_device
from torchkafka.worker.model._versions import weights_version

CPU = torch.device("cpu")
#: A model initialized by torch's global generator, as most are.
DEFAULT_INIT = "tests.support.tiny_models:default_init_mlp"


def load(spec: str, weights: Path | None = None) -> LoadedModel:
    return load_model(parse_model_spec(spec), weights, CPU)


def sha_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        result: torch.Tensor = model(x)
    return result


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(5, tiny_models.FEATURES, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def source() -> nn.Module:
    return tiny_models.tiny_mlp(seed=7)


@pytest.fixture
def state_dict_file(tmp_path: Path, source: nn.Module) -> Path:
    path = tmp_path / "mlp.pt"
    torch.save(source.state_dict(), path)
    return path


def test_torchscript_loads_with_the_source_outputs(tmp_path, source, x) -> None:
    path = tmp_path / "mlp.ts"
    save_torchscript(source, x, path)
    loaded = load(f"torchscript:{path}")
    assert not loaded.module.training
    torch.testing.assert_close(run(loaded.module, x), run(source, x))
    assert (loaded.name, loaded.version) == ("mlp", sha_prefix(path))


def test_export_loads_with_the_source_outputs(tmp_path, source, x) -> None:
    path = tmp_path / "mlp.pt2"
    save_exported(source, x, path)
    loaded = load(f"export:{path}")
    torch.testing.assert_close(run(loaded.module, x), run(source, x))
    torch.testing.assert_close(run(loaded.module, x[:1]), run(source, x[:1]))
    assert (loaded.name, loaded.version) == ("mlp", sha_prefix(path))


def test_python_factory_without_weights_is_versioned_by_its_weights(x) -> None:
    loaded = load(f"python:{FACTORY}")
    assert not loaded.module.training
    torch.testing.assert_close(run(loaded.module, x), run(tiny_models.tiny_mlp(), x))
    assert loaded.name == FACTORY
    assert loaded.version == weights_version(tiny_models.tiny_mlp())
    assert re.fullmatch(r"[0-9a-f]{12}", loaded.version)


def test_python_factory_with_weights_takes_them(state_dict_file, source, x) -> None:
    loaded = load(f"python:{FACTORY}", state_dict_file)
    torch.testing.assert_close(run(loaded.module, x), run(source, x))
    assert loaded.version == weights_version(source), "the weights' version, whatever the file"
    assert loaded.version != load(f"python:{FACTORY}").version


def test_torchvision_resnet18_random_init_runs() -> None:
    loaded = load("torchvision:resnet18")
    assert loaded.name == "resnet18"
    assert not loaded.module.training
    assert run(loaded.module, torch.rand(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("spec", ["torchvision:squeezenet1_1", f"python:{DEFAULT_INIT}"])
def test_random_init_is_seeded_so_two_builds_compute_the_same_function(spec: str) -> None:
    """Every worker of a group builds the same weights, and says so with the same version."""
    torch.manual_seed(1)
    first = load(spec)
    torch.manual_seed(2)  # the global generator's state does not matter
    second = load(spec)
    images = torch.rand(2, 3, 64, 64) if spec.startswith("torchvision") else torch.rand(2, 4)
    assert torch.equal(run(first.module, images), run(second.module, images))
    assert first.version == second.version


def test_random_init_leaves_the_global_generator_as_it_was() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load(f"python:{DEFAULT_INIT}")
    assert torch.equal(torch.rand(3), expected)


def test_different_weights_have_different_versions() -> None:
    a, b = tiny_models.tiny_mlp(seed=1), tiny_models.tiny_mlp(seed=1)
    assert weights_version(a) == weights_version(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert weights_version(a) != weights_version(b)
    assert weights_version(a) != weights_version(a.to(torch.float64))
    assert weights_version(tiny_models.tiny_mlp(seed=1)) != weights_version(
        tiny_models.tiny_mlp(seed=2)
    )


def test_torchvision_with_weights_takes_them(tmp_path) -> None:
    torch.manual_seed(3)
    source = torchvision.models.squeezenet1_1(weights=None).eval()
    path = tmp_path / "squeezenet.pt"
    torch.save(source.state_dict(), path)
    loaded = load("torchvision:squeezenet1_1", path)
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(run(loaded.module, images), run(source, images))
    assert loaded.version == weights_version(source)


def test_torchvision_never_downloads_a_backbone(monkeypatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    assert load("torchvision:lraspp_mobilenet_v3_large").name == "lraspp_mobilenet_v3_large"


def test_weights_only_refuses_arbitrary_objects(tmp_path, source) -> None:
    path = tmp_path / "evil.pt"
    torch.save({**source.state_dict(), "payload": Payload()}, path)
    with pytest.raises(StartupError, match="weights_only=True"):
        load(f"python:{FACTORY}", path)
    assert tiny_models.UNPICKLED == []
    # The payload is real: an unrestricted load runs it.
    torch.load(path, weights_only=False)
    assert tiny_models.UNPICKLED == ["payload ran"]
    tiny_models.UNPICKLED.clear()


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("torchvision:resnet19", ["unknown torchvision model 'resnet19'", "resnet18"]),
        ("torchvision:nothing_like_it", ["unknown torchvision model", "list_models()"]),
        ("torchscript:/no/such/model.ts", ["torchscript file not found", "/no/such/model.ts"]),
        ("export:/no/such/model.pt2", ["export file not found"]),
        ("python:tests.unit.worker.no_such_module:f", ["cannot import", "no_such_module"]),
        ("python:tests.support.tiny_models:missing", ["has no attribute missing"]),
        ("python:tests.support.tiny_models:CLASSES", ["is not callable (it is int)"]),
        ("python:tests.support.tiny_models:raises", ["raised", "factory exploded"]),
        ("python:tests.support.tiny_models:returns_int", ["returned int, not a torch.nn"]),
    ],
)
def test_load_errors_name_the_problem(spec: str, fragments: list[str]) -> None:
    with pytest.raises(StartupError) as info:
        load(spec)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("torchscript", "cannot load torchscript file"), ("export", "cannot load torch.export file")],
)
def test_corrupt_artifact(tmp_path, kind, message) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a model")
    with pytest.raises(StartupError, match=re.escape(message)):
        load(f"{kind}:{path}")


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_artifacts_refuse_a_separate_weights_file(tmp_path, state_dict_file, kind) -> None:
    with pytest.raises(StartupError, match="carries its own weights"):
        load(f"{kind}:{tmp_path / 'model'}", state_dict_file)


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(StartupError, match="weights file not found"):
        load(f"python:{FACTORY}", tmp_path / "absent.pt")


def test_weights_that_are_not_a_torch_file(tmp_path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"junk")
    with pytest.raises(StartupError, match="cannot load weights"):
        load(f"python:{FACTORY}", path)


def test_weights_that_are_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(StartupError, match="hold list, not a state dict"):
        load(f"python:{FACTORY}", path)


@pytest.mark.parametrize(
    ("other", "fragment"),
    [
        (nn.Linear(tiny_models.FEATURES, 2), "Missing key"),
        (nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3)), "size mismatch"),
    ],
)
def test_weights_that_do_not_fit(tmp_path, other: nn.Module, fragment: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(StartupError, match=re.escape(f"do not fit python:{FACTORY}")) as info:
        load(f"python:{FACTORY}", path)
    assert fragment in str(info.value)


def test_resolve_cpu_and_auto() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("text", ["cuda", "cuda:0"])
def test_cuda_on_a_cpu_only_machine(text) -> None:
    with pytest.raises(StartupError, match=f"device {text} requested, but CUDA is not available"):
        resolve_device(text)


def test_a_gpu_index_past_the_last() -> None:
    text = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(StartupError, match=f"device {text} "):
        resolve_device(text)


@pytest.mark.parametrize("text", ["", "gpu", "CUDA", "cuda:", "cuda:x", "mps", "cpu:0"])
def test_unknown_devices(text) -> None:
    with pytest.raises(StartupError, match=r"unknown device .*use cpu, cuda, cuda:N or auto"):
        resolve_device(text)
