"""What a submitted request can end in besides its result."""

from __future__ import annotations

from torchkafka.codecs import DeadLetterInfo, TorchKafkaError


class ClientError(TorchKafkaError):
    """A request did not get its result."""


class DeadLettered(ClientError):
    """The worker dead-lettered the request: ``reason`` is its code, ``error`` the text."""

    def __init__(self, request_id: str, info: DeadLetterInfo) -> None:
        super().__init__(f"request {request_id!r} was dead-lettered: {info.reason}: {info.error}")
        self.request_id = request_id
        self.reason = info.reason
        self.error = info.error
        self.info = info


class RequestTimedOut(ClientError, TimeoutError):
    """No result or dead letter came within the request's timeout.

    The request may still be answered later; submitting it again with the
    same id is safe: the worker's dedup answers an id once.
    """


class TooManyInFlight(ClientError):
    """``max_in_flight`` requests await their results already."""


class SendFailed(ClientError):
    """The input topic did not take the request (the producer's delivery failed)."""


class UnreadableOutcome(ClientError):
    """A message of the result or dead-letter topic that cannot be read as an outcome."""


class ClientClosed(ClientError):
    """The client was closed before the request got its result."""
