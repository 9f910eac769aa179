"""Loading the configuration: defaults < config file < environment < flags, typed.

Settings are addressed by their flat names everywhere (``max_wait_ms``); a
config file may also group them under their section (``[batching]``).
librdkafka settings pass through untouched from the ``client``, ``consumer``
and ``producer`` tables and ``--client-config`` / ``--consumer-config`` /
``--producer-config KEY=VALUE`` flags. A secret ``X`` may instead be read
from the file named by ``X_file`` (``TORCHKAFKA_X_FILE``, ``--x-file``).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config._fields import setting_name
from torchkafka.worker.config._secret import Secret
from torchkafka.worker.config._sections import (
    SECTIONS,
    KafkaConnection,
    WorkerConfig,
)

ENV_PREFIX = "TORCHKAFKA_"
#: Plain environment variables that also configure the worker (as in the README).
ENV_ALIASES = {"KAFKA_BOOTSTRAP": "bootstrap", "REDIS_URL": "redis_url"}


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One settable field: where it lives, its type, and how it is described."""

    name: str
    section: str | None  # None: a field of WorkerConfig itself
    attribute: str
    kind: Any  # the resolved type annotation
    field: dataclasses.Field[Any]

    @property
    def help(self) -> str:
        """The field's help text."""
        text: str = self.field.metadata["help"]
        return text

    @property
    def is_secret(self) -> bool:
        """Secrets have no flag and never show."""
        return bool(self.field.metadata.get("secret"))

    @property
    def is_mapping(self) -> bool:
        """librdkafka pass-through tables: merged, not replaced, across sources."""
        return get_origin(self.kind) is Mapping

    @property
    def is_integer_list(self) -> bool:
        """Integers given as ``N,N,...`` (or a TOML array), such as ``input_shape``."""
        kinds = get_args(self.kind) if get_origin(self.kind) is types.UnionType else (self.kind,)
        return any(get_origin(kind) is tuple for kind in kinds)

    @property
    def required(self) -> bool:
        """No default: must be given."""
        f = self.field
        return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _settings() -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    owners: list[tuple[str | None, type[Any]]] = [(None, WorkerConfig), *SECTIONS.items()]
    for section, cls in owners:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("section"):
                continue
            name = setting_name(f)
            if name in found:
                raise AssertionError(f"setting name {name!r} is used twice")
            found[name] = Setting(name, section, f.name, hints[f.name], f)
    return found


#: Every setting by its flat name, in declaration order (sections after the top fields).
SETTINGS = _settings()
#: ``X_file`` -> ``X`` for every secret ``X``.
SECRET_FILES = {f"{s.name}_file": s.name for s in SETTINGS.values() if s.is_secret}


def load_config(
    file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> WorkerConfig:
    """Merge defaults, ``file``, ``environ`` and ``flags`` (None values are unset)."""
    values = _gather(file, environ, flags)
    missing = [s.name for s in SETTINGS.values() if s.required and s.name not in values]
    if missing:
        raise StartupError(
            "missing configuration: "
            + ", ".join(f"{name} (--{name.replace('_', '-')})" for name in missing)
        )
    return build_config(values)


def load_connection(
    file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> KafkaConnection:
    """Only the Kafka connection, from the same sources: for the client-side commands."""
    values = _gather(file, environ, flags)
    kafka = [SETTINGS[name] for name in values if SETTINGS[name].section == "kafka"]
    return KafkaConnection(**{s.attribute: _parse(s, values[s.name]) for s in kafka})


def _gather(
    file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if file is not None:
        values.update(_from_file(file))
    _merge(values, _from_environ(environ))
    _merge(values, {name: value for name, value in flags.items() if value is not None})
    _read_secret_files(values)
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise StartupError(f"unknown settings {unknown}")
    return values


def build_config(values: Mapping[str, Any]) -> WorkerConfig:
    """A ``WorkerConfig`` from flat names and raw values (strings, TOML values or typed)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for name, raw in values.items():
        target = SETTINGS.get(name)
        if target is None:
            raise StartupError(f"unknown setting {name!r}")
        parsed = _parse(target, raw)
        into = top if target.section is None else sections[target.section]
        into[target.attribute] = parsed
    built = {name: SECTIONS[name](**given) for name, given in sections.items()}
    return WorkerConfig(**top, **built)


def _merge(values: dict[str, Any], update: Mapping[str, Any]) -> None:
    for name, value in update.items():
        setting = SETTINGS.get(name)
        if setting is not None and setting.is_mapping:
            values[name] = {**values.get(name, {}), **value}
        else:
            values[name] = value


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise StartupError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"config file {path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                owner = SETTINGS.get(SECRET_FILES.get(inner) or inner)
                if owner is None or owner.section != key:
                    unknown.append(f"{key}.{inner}")
                values[inner] = inner_value
        elif key in SETTINGS or key in SECRET_FILES:
            values[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise StartupError(f"config file {path}: unknown keys {sorted(unknown)}")
    return values


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: environ[variable] for variable, name in ENV_ALIASES.items() if environ.get(variable)
    }
    names = [s.name for s in SETTINGS.values() if not s.is_mapping] + list(SECRET_FILES)
    for name in names:
        variable = ENV_PREFIX + name.upper()
        if environ.get(variable):
            values[name] = environ[variable]
    return values


def _read_secret_files(values: dict[str, Any]) -> None:
    for file_key, name in SECRET_FILES.items():
        path = values.pop(file_key, None)
        if path is None:
            continue
        try:
            values[name] = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise StartupError(f"{file_key}: cannot read {path}: {exc.strerror}") from exc


def _parse(setting: Setting, value: Any) -> Any:
    try:
        return _typed(setting.kind, value)
    except (TypeError, ValueError) as exc:
        shown = "***" if setting.is_secret else repr(value)
        raise StartupError(f"{setting.name}: cannot use {shown} ({exc})") from exc
    except _NotAllowed as exc:
        raise StartupError(f"{setting.name} must be one of {exc}; got {value!r}") from None


class _NotAllowed(Exception):
    """A value outside a ``Literal``'s choices; the message lists them."""


def _typed(kind: Any, value: Any) -> Any:
    """``value`` (an environment string, a TOML value, or typed already) as ``kind``."""
    origin = get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [arg for arg in get_args(kind) if arg is not type(None)]
        return _typed(inner, value)
    if origin is Literal:
        if value not in get_args(kind):
            raise _NotAllowed(", ".join(get_args(kind)))
        return value
    if origin is tuple:
        parts = value.split(",") if isinstance(value, str) else list(value)
        return tuple(int(part) for part in parts if str(part).strip())
    if origin is Mapping:
        return {str(k): str(v) for k, v in dict(value).items()}
    if kind is bool:
        return _boolean(value)
    if kind is Secret:
        return value if isinstance(value, Secret) else Secret(str(value))
    if kind in (int, float, str, Path):
        return kind(value)
    raise TypeError(f"no parser for {kind}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError("expected true or false")
    return text in _TRUE
