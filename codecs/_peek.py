"""Reading a message's id without decoding the rest (no torch: tools and clients use it)."""

from __future__ import annotations

import msgpack


def request_id_of(data: bytes | None) -> str | None:
    """The ``id`` of a message's top-level map, whatever else is wrong with it (a dead
    letter's request, say); None when there is none to read."""
    if not data:
        return None
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # any unpacker failure: bytes that are no map have no id
        return None
    request_id = envelope.get("id") if isinstance(envelope, dict) else None
    return request_id if isinstance(request_id, str) else None
