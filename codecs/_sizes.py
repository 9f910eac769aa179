"""Byte sizes of the wire format that need no torch (topology derives topic limits from them)."""

from __future__ import annotations

MiB = 1 << 20

#: The longest message a decoder accepts by default (``Limits.max_message_bytes``).
MAX_MESSAGE_BYTES = 16 * MiB
