"""Typed reads of msgpack maps that raise DecodeErrors naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from torchkafka.codecs._errors import InvalidField, MissingField

T = TypeVar("T")

_TYPE_NAMES = {dict: "a map", list: "an array", str: "a string", bytes: "binary", int: "an integer"}


def describe(value: object) -> str:
    """A short, safe description of a value's msgpack type, for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def expect(value: object, kind: type[T], path: str) -> T:
    """``value`` if it is exactly of msgpack type ``kind`` (no bool for int)."""
    if type(value) is not kind:
        raise InvalidField(path, f"expected {_TYPE_NAMES[kind]}, got {describe(value)}")
    return value


def required(obj: dict[str, Any], key: str, kind: type[T], path: str) -> T:
    """``obj[key]``, which must exist and be of msgpack type ``kind``."""
    value = obj.get(key)
    if type(value) is kind:
        return value
    if value is None:
        raise MissingField(f"{path}.{key}", "required field is missing")
    return expect(value, kind, f"{path}.{key}")


def optional(obj: dict[str, Any], key: str, kind: type[T], path: str) -> T | None:
    """``obj[key]`` if present and not nil; then it must be of msgpack type ``kind``."""
    value = obj.get(key)
    if value is None:
        return None
    return expect(value, kind, f"{path}.{key}")
