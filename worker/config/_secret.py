"""Secrets in settings: values that never show in a repr, a log line or an error."""

from __future__ import annotations

from dataclasses import dataclass, field

MASK = "***"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password or key; ``reveal()`` is the only way to read it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret itself, for the client that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__


def mask_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = credentials.partition(":")
    return f"{scheme}{sep}{user}{':' + MASK if colon else ''}@{host}"
