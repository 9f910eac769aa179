"""Bytes to the one msgpack value they hold, as strictly as the wire format reads them.

Beyond msgpack itself: every map key is a string (a ``str``; not an integer,
not ``bin``), and no map has a key twice (a reader that kept the first would
see another request than one that kept the last). Each way to fail is a
``MalformedMessage`` whose error text starts with a stable phrase (listed in
docs/wire-format.md), not with the msgpack library's own words.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from torchkafka.codecs._errors import MalformedMessage
from torchkafka.codecs._fields import describe

#: How deep containers may nest, the envelope counted (msgpack's own bound).
MAX_DEPTH = 1024
#: What a map key msgpack refuses is, by the Python type msgpack names.
_KEY_KINDS = {
    "int": "an integer",
    "float": "a float",
    "bool": "a boolean",
    "NoneType": "nil",
    "list": "an array",
    "dict": "a map",
    "ExtType": "an ext value",
    "Timestamp": "a timestamp",
}


def unpack(data: bytes) -> Any:
    """The one msgpack value that is all of ``data``; ``MalformedMessage`` otherwise."""
    if not data:
        raise MalformedMessage("$", "empty: a message of 0 bytes holds no msgpack value")
    try:
        # msgpack bounds each container and string by len(data), so a declared
        # length can never allocate more than the message itself.
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_map
        )
    except MalformedMessage:
        raise
    except Exception as exc:  # any unpacker failure means malformed input
        raise MalformedMessage("$", _why(exc, len(data))) from exc


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map's pairs as a dict, refused if a key repeats or is not a string."""
    decoded = dict(pairs)
    if len(decoded) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedMessage("$", f"duplicate map key: {key!r:.64} is in one map twice")
            seen.add(key)
    for key in decoded:
        if type(key) is not str:
            raise _key_not_a_string(describe(key))
    return decoded


def _why(exc: Exception, size: int) -> str:
    """A stable description of an unpacker failure on a message of ``size`` bytes."""
    text = str(exc)
    if isinstance(exc, msgpack.ExtraData):
        return f"trailing bytes: the value ends at byte {size - len(exc.extra)} of {size}"
    if isinstance(exc, msgpack.FormatError):
        return "invalid byte: 0xc1, which msgpack never uses, stands where a value starts"
    if isinstance(exc, msgpack.StackError):
        return f"nested too deeply: over {MAX_DEPTH} containers, one in another"
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.object[exc.start]
        return f"invalid UTF-8: byte {exc.start} of a string is 0x{byte:02x} ({exc.reason})"
    if "incomplete input" in text or " exceeds max_" in text:
        return "truncated: the data ends inside a value (a length or count runs past the end)"
    if "is not allowed for map key" in text:
        kind = text.partition(" ")[0]
        return _key_not_a_string(_KEY_KINDS.get(kind, kind)).detail
    timestamp = re.fullmatch(r"invalid timestamp data \(length (\d+)\)", text)
    if timestamp is not None:
        return (
            f"invalid timestamp: ext type -1 of {timestamp[1]} bytes (a timestamp has 4, 8 or 12)"
        )
    if text == "code must be 0~127":
        return "reserved ext type: types -128 to -2 are msgpack's, for types not defined yet"
    return f"not msgpack: {type(exc).__name__}: {text}"


def _key_not_a_string(kind: str) -> MalformedMessage:
    return MalformedMessage("$", f"map key not a string: a map has a key that is {kind}")
