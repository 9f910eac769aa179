"""Loading the model a spec names onto a device, failing at start-up, never later.

A loaded model's ``name`` is the torchvision model name, the artifact's file
stem (``model`` for ``model.pt2``) or the factory path. Its ``version`` is a
content hash (``_versions``): of the artifact file, or of the state dict of a
torchvision or python model (built under a fixed seed, weights loaded).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.export.passes import move_to_device_pass

from torchkafka.worker._errors import StartupError
from torchkafka.worker.model._spec import ModelSpec
from torchkafka.worker.model._versions import file_version, seeded_init, weights_version

_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model in eval mode on its device, with the name and version results report."""

    module: torch.nn.Module
    name: str
    version: str


def resolve_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` (the current GPU), ``cuda:N`` or ``auto`` (cuda if available).

    Raises ``StartupError`` for any other text and for a GPU this machine lacks.
    """
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _CUDA_DEVICE.fullmatch(text)
    if match is None:
        raise StartupError(f"unknown device {text!r:.40}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise StartupError(
            f"device {text} requested, but CUDA is not available here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})"
        )
    count = torch.cuda.device_count()
    if match[1] is not None and int(match[1]) >= count:
        raise StartupError(f"device {text} does not exist: this machine has {count} GPU(s)")
    return torch.device(text)


def load_model(spec: ModelSpec, weights: Path | None, device: torch.device) -> LoadedModel:
    """Load ``spec`` (with an optional state-dict file) in eval mode on ``device``.

    ``weights`` applies to torchvision and python models only; artifact files
    (torchscript, export, aoti) carry their own. Every failure is a ``StartupError``.
    """
    if spec.artifact is not None:
        if weights is not None:
            raise StartupError(f"{spec} carries its own weights; do not pass a weights file too")
        path = _existing_file(str(spec.artifact), spec.kind)
        load = _ARTIFACT_LOADERS[spec.kind]
        return LoadedModel(load(path, device), path.stem, file_version(path))
    build = _build_torchvision if spec.kind == "torchvision" else _build_from_factory
    with seeded_init():
        module = build(spec.target)
    if weights is not None:
        _load_state_dict(module, _existing_file(str(weights), "weights"), spec)
    return LoadedModel(module.to(device).eval(), spec.target, weights_version(module))


def _existing_file(path_text: str, what: str) -> Path:
    path = Path(path_text)
    if not path.is_file():
        raise StartupError(f"{what} file not found: {path}")
    return path


def _load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            # Deprecated upstream in favour of torch.export, still what many
            # users have: accepted here; export:PATH is the recommended form.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
            module: torch.nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
                path, map_location=device
            )
    except Exception as exc:  # any deserialization failure means "cannot start"
        raise StartupError(f"cannot load torchscript file {path}: {exc}") from exc
    return module.eval()


def _load_exported(path: Path, device: torch.device) -> torch.nn.Module:
    """The exported program as a module; its graph has no train/eval switch.

    torch.export fixes the mode at export time: export the model in eval mode.
    """
    try:
        program = move_to_device_pass(torch.export.load(path), device)
    except Exception as exc:  # any deserialization failure means "cannot start"
        raise StartupError(f"cannot load torch.export file {path}: {exc}") from exc
    return program.module()


def _load_aoti(path: Path, device: torch.device) -> torch.nn.Module:
    """An AOTInductor package: compiled ahead of time for one device type and CPU ISA."""
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # any deserialization failure means "cannot start"
        raise StartupError(f"cannot load AOTInductor package {path}: {exc}") from exc
    built_for = compiled.get_metadata().get("AOTI_DEVICE_KEY", "?")
    if built_for != device.type:
        raise StartupError(
            f"AOTInductor package {path} was built for {built_for}, not {device}; build it "
            f"again with torchkafka model build --device {device.type}"
        )
    return _CompiledPackage(compiled)


class _CompiledPackage(torch.nn.Module):
    """An AOTInductor package as a module (it has no train/eval mode, nor parameters)."""

    def __init__(self, compiled: Callable[..., object]) -> None:
        super().__init__()
        self._compiled = compiled

    def forward(self, batch: torch.Tensor) -> object:
        return self._compiled(batch)


_ARTIFACT_LOADERS: dict[str, Callable[[Path, torch.device], torch.nn.Module]] = {
    "torchscript": _load_torchscript,
    "export": _load_exported,
    "aoti": _load_aoti,
}


def _build_torchvision(name: str) -> torch.nn.Module:
    from torchvision import models  # here: only torchvision specs pay for importing it

    known = models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise StartupError(
            f"unknown torchvision model {name!r:.60}; {hint}"
            "torchvision.models.list_models() lists them all"
        )
    builder = models.get_model_builder(name)
    options: dict[str, None] = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        options["weights_backbone"] = None  # its default downloads ImageNet weights
    module: torch.nn.Module = builder(**options)
    return module


def _build_from_factory(target: str) -> torch.nn.Module:
    module_name, _, qualname = target.partition(":")
    try:
        factory: object = importlib.import_module(module_name)
    except Exception as exc:  # importing runs arbitrary user code
        raise StartupError(f"cannot import {module_name} for python:{target}: {exc!r}") from exc
    for attribute in qualname.split("."):
        if not hasattr(factory, attribute):
            raise StartupError(f"python:{target}: {module_name} has no attribute {qualname}")
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise StartupError(f"python:{target} is not callable (it is {type(factory).__name__})")
    try:
        built = factory()
    except Exception as exc:  # the factory is user code
        raise StartupError(f"model factory python:{target} raised {exc!r}") from exc
    if not isinstance(built, torch.nn.Module):
        raise StartupError(
            f"model factory python:{target} returned {type(built).__name__}, not a torch.nn.Module"
        )
    return built


def _load_state_dict(module: torch.nn.Module, path: Path, spec: ModelSpec) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused objects, others for bad files
        raise StartupError(
            f"cannot load weights {path} (loaded with weights_only=True, which refuses "
            f"anything but tensors and plain containers): {exc}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise StartupError(
            f"weights {path} hold {type(state).__name__}, not a state dict "
            "(a mapping of parameter names to tensors, as module.state_dict() returns)"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise StartupError(f"weights {path} do not fit {spec}: {exc}") from exc
