"""Exceptions raised by torchkafka.

The tree (every class is importable from ``torchkafka.codecs``)::

    TorchKafkaError                 root of every error torchkafka raises on purpose
    └── CodecError                  bytes could not become values, or values bytes
        ├── EncodeError             the caller passed something the wire format cannot carry
        └── DecodeError             a message is bad: dead-letter it, never retry it
            ├── MessageTooLarge         message_too_large
            ├── MalformedMessage        malformed_msgpack
            ├── UnsupportedVersion      unsupported_version
            ├── MissingField            missing_field
            ├── InvalidField            invalid_field
            ├── UnsupportedDtype        unsupported_dtype
            ├── InvalidShape            invalid_shape
            ├── PayloadSizeMismatch     payload_size_mismatch
            ├── InvalidImage            invalid_image
            └── LimitExceeded           a configured limit was passed
                ├── IdTooLong               id_too_long
                ├── TooManyInputs           too_many_inputs
                ├── TooManyDims             too_many_dims
                ├── TooManyElements         too_many_elements
                └── ImageTooLarge           image_too_large

Each ``DecodeError`` subclass has exactly one stable reason code (its ``reason``),
which is what the dead-letter topic carries. ``path`` names the offending field,
``$`` being the whole message, e.g. ``$.inputs['image'].shape[1]``.
"""

from __future__ import annotations

from typing import ClassVar

from torchkafka.codecs._reasons import Reason


class TorchKafkaError(Exception):
    """Root of every exception torchkafka raises deliberately."""


class CodecError(TorchKafkaError):
    """A value could not be encoded or a message could not be decoded."""


class EncodeError(CodecError):
    """The caller asked to encode something the wire format cannot carry."""


class DecodeError(CodecError):
    """A message that can never be processed; it belongs on the dead-letter topic."""

    reason: ClassVar[Reason]

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail

    def under(self, prefix: str) -> DecodeError:
        """The same error with its path placed under ``prefix`` (a field's parent)."""
        moved = type(self)(prefix + self.path, self.detail)
        moved.__cause__ = self.__cause__
        return moved


class MessageTooLarge(DecodeError):
    """The message is longer than ``Limits.max_message_bytes``."""

    reason = Reason.MESSAGE_TOO_LARGE


class MalformedMessage(DecodeError):
    """The bytes are not one well-formed msgpack value."""

    reason = Reason.MALFORMED_MSGPACK


class UnsupportedVersion(DecodeError):
    """The envelope's ``v`` is not a version this reader understands."""

    reason = Reason.UNSUPPORTED_VERSION


class MissingField(DecodeError):
    """A required field is absent."""

    reason = Reason.MISSING_FIELD


class InvalidField(DecodeError):
    """A field has the wrong type or a value outside its domain."""

    reason = Reason.INVALID_FIELD


class UnsupportedDtype(DecodeError):
    """The dtype name is unknown or not in the configured whitelist."""

    reason = Reason.UNSUPPORTED_DTYPE


class InvalidShape(DecodeError):
    """The shape is not a list of non-negative integers."""

    reason = Reason.INVALID_SHAPE


class PayloadSizeMismatch(DecodeError):
    """The tensor's byte count differs from ``itemsize * prod(shape)``."""

    reason = Reason.PAYLOAD_SIZE_MISMATCH


class InvalidImage(DecodeError):
    """An encoded image is corrupt, of an unsupported format, or not what it claims."""

    reason = Reason.INVALID_IMAGE


class LimitExceeded(DecodeError):
    """A configured limit (see ``Limits``) was passed."""


class IdTooLong(LimitExceeded):
    """The request id is longer than ``Limits.max_id_bytes`` (UTF-8)."""

    reason = Reason.ID_TOO_LONG


class TooManyInputs(LimitExceeded):
    """The request has more named inputs than ``Limits.max_inputs``."""

    reason = Reason.TOO_MANY_INPUTS


class TooManyDims(LimitExceeded):
    """A tensor has more dimensions than ``Limits.max_dims``."""

    reason = Reason.TOO_MANY_DIMS


class TooManyElements(LimitExceeded):
    """A tensor declares more elements than ``Limits.max_elements``."""

    reason = Reason.TOO_MANY_ELEMENTS


class ImageTooLarge(LimitExceeded):
    """An image declares more pixels than ``Limits.max_image_pixels``."""

    reason = Reason.IMAGE_TOO_LARGE
