"""How a settings field is declared: its help text, flag name and kind, and value checks."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from torchkafka.worker._errors import StartupError


def setting(
    help_text: str,
    default: Any = dataclasses.MISSING,
    factory: Any = dataclasses.MISSING,
    name: str | None = None,
) -> Any:
    """A field with its help text; ``name`` when its flag differs from the attribute."""
    metadata = {"help": help_text, **({"name": name} if name else {})}
    return field(default=default, default_factory=factory, metadata=metadata)


def secret(help_text: str) -> Any:
    """A secret field: no flag, masked wherever it is printed."""
    return field(default=None, metadata={"help": help_text, "secret": True})


def section(factory: Any = dataclasses.MISSING) -> Any:
    """A field of ``WorkerConfig`` that holds a section (required when it has no factory)."""
    return field(default_factory=factory, metadata={"section": True})


def positive(section: object, *names: str) -> None:
    """Refuse (``StartupError``) any of ``names`` of ``section`` below 1."""
    for name in names:
        if getattr(section, name) < 1:
            raise StartupError(f"{name} must be >= 1, got {getattr(section, name)}")


def not_negative(section: object, *names: str) -> None:
    """Refuse (``StartupError``) any of ``names`` of ``section`` below 0."""
    for name in names:
        if getattr(section, name) < 0:
            raise StartupError(f"{name} must be >= 0, got {getattr(section, name)}")


def setting_name(f: dataclasses.Field[Any]) -> str:
    """A field's flat name: its flag (``--name``), variable and config-file key."""
    name: str = f.metadata.get("name", f.name)
    return name
