"""Model specs: the text that names where the worker's model comes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from torchkafka.worker._errors import StartupError

ModelKind = Literal["torchvision", "torchscript", "export", "aoti", "python"]

_KINDS: dict[str, ModelKind] = {kind: kind for kind in get_args(ModelKind)}

ACCEPTED_FORMS = (
    "torchvision:NAME (e.g. torchvision:resnet18)",
    "torchscript:PATH",
    "export:PATH (a torch.export .pt2 file)",
    "aoti:PATH (an AOTInductor package, from torchkafka model build --backend compile)",
    "python:package.module:factory (a zero-argument callable returning an nn.Module)",
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where the model comes from: a ``kind`` and its ``target``.

    ``target`` is the torchvision model name, the file path (torchscript,
    export, aoti) or ``package.module:factory`` (python).
    """

    kind: ModelKind
    target: str

    @property
    def artifact(self) -> Path | None:
        """The file the model is loaded from (it carries its weights), if any."""
        return Path(self.target) if self.kind in ("torchscript", "export", "aoti") else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``KIND:TARGET``; raise ``StartupError`` listing the accepted forms."""
    prefix, _, target = text.strip().partition(":")
    kind = _KINDS.get(prefix)
    if kind is None or not target:
        raise _bad_spec(text, "expected KIND:TARGET with a known KIND")
    if kind == "python":
        _check_factory_path(text, target)
    return ModelSpec(kind=kind, target=target)


def _check_factory_path(text: str, target: str) -> None:
    module, sep, factory = target.partition(":")
    if not sep or not _is_dotted_name(module) or not _is_dotted_name(factory):
        raise _bad_spec(text, "python: needs package.module:factory (dotted Python names)")


def _is_dotted_name(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _bad_spec(text: str, problem: str) -> StartupError:
    forms = "; ".join(ACCEPTED_FORMS)
    return StartupError(f"invalid model spec {text!r:.200}: {problem}. Accepted forms: {forms}")
