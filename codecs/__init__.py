"""Wire format of torchkafka: bytes <-> requests, results and dead letters.

Pure functions and values only: no Kafka, no Redis, no I/O. The format is
specified, language-neutrally, in docs/wire-format.md.
"""

import importlib
from typing import TYPE_CHECKING, Any

from torchkafka.codecs._dead_letter import (
    ATTEMPTS_HEADER,
    HEADER_PREFIX,
    MAX_ERROR_BYTES,
    DeadLetterInfo,
    dead_letter_headers,
    read_dead_letter_info,
)
from torchkafka.codecs._errors import (
    CodecError,
    DecodeError,
    EncodeError,
    IdTooLong,
    ImageTooLarge,
    InvalidField,
    InvalidImage,
    InvalidShape,
    LimitExceeded,
    MalformedMessage,
    MessageTooLarge,
    MissingField,
    PayloadSizeMismatch,
    TooManyDims,
    TooManyElements,
    TooManyInputs,
    TorchKafkaError,
    UnsupportedDtype,
    UnsupportedVersion,
)
from torchkafka.codecs._peek import request_id_of
from torchkafka.codecs._reasons import Reason
from torchkafka.codecs._sizes import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from torchkafka.codecs._dtypes import DTYPES
    from torchkafka.codecs._encoder import Encoder, encode_request, encode_result
    from torchkafka.codecs._image import EncodedImage, decode_image, encoded_image
    from torchkafka.codecs._limits import DEFAULT_LIMITS, Limits
    from torchkafka.codecs._messages import WIRE_VERSION, Input, ModelInfo, Request, Result
    from torchkafka.codecs._request import decode_request
    from torchkafka.codecs._result import decode_result

# The names that need torch load on first use, so that the errors, reasons and
# dead-letter headers (which topology and tools use) import without torch.
_LAZY = {
    "DTYPES": "_dtypes",
    "Encoder": "_encoder",
    "encode_request": "_encoder",
    "encode_result": "_encoder",
    "EncodedImage": "_image",
    "decode_image": "_image",
    "encoded_image": "_image",
    "DEFAULT_LIMITS": "_limits",
    "Limits": "_limits",
    "WIRE_VERSION": "_messages",
    "Input": "_messages",
    "ModelInfo": "_messages",
    "Request": "_messages",
    "Result": "_messages",
    "decode_request": "_request",
    "decode_result": "_result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ATTEMPTS_HEADER",
    "DEFAULT_LIMITS",
    "DTYPES",
    "HEADER_PREFIX",
    "MAX_ERROR_BYTES",
    "MAX_MESSAGE_BYTES",
    "WIRE_VERSION",
    "CodecError",
    "DeadLetterInfo",
    "DecodeError",
    "EncodeError",
    "EncodedImage",
    "Encoder",
    "IdTooLong",
    "ImageTooLarge",
    "Input",
    "InvalidField",
    "InvalidImage",
    "InvalidShape",
    "LimitExceeded",
    "Limits",
    "MalformedMessage",
    "MessageTooLarge",
    "MissingField",
    "ModelInfo",
    "PayloadSizeMismatch",
    "Reason",
    "Request",
    "Result",
    "TooManyDims",
    "TooManyElements",
    "TooManyInputs",
    "TorchKafkaError",
    "UnsupportedDtype",
    "UnsupportedVersion",
    "dead_letter_headers",
    "decode_image",
    "decode_request",
    "decode_result",
    "encode_request",
    "encode_result",
    "encoded_image",
    "read_dead_letter_info",
    "request_id_of",
]
