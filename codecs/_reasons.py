"""Stable reason codes carried by dead letters (see docs/wire-format.md)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message went to the dead-letter topic. Values never change meaning."""

    MESSAGE_TOO_LARGE = "message_too_large"
    MALFORMED_MSGPACK = "malformed_msgpack"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    UNSUPPORTED_DTYPE = "unsupported_dtype"
    INVALID_SHAPE = "invalid_shape"
    PAYLOAD_SIZE_MISMATCH = "payload_size_mismatch"
    INVALID_IMAGE = "invalid_image"
    ID_TOO_LONG = "id_too_long"
    TOO_MANY_INPUTS = "too_many_inputs"
    TOO_MANY_DIMS = "too_many_dims"
    TOO_MANY_ELEMENTS = "too_many_elements"
    IMAGE_TOO_LARGE = "image_too_large"
