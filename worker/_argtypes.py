"""Argument types of the command line: each parses one flag's text or says why not."""

from __future__ import annotations

import argparse


def shape(text: str) -> list[int]:
    """A tensor shape: comma-separated non-negative integers."""
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if any(dim < 0 for dim in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be >= 0, got {text!r}")
    return dims


def positive(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE, as a pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
