"""The client library: send tensors to a torchkafka pipeline and get their results back.

``Client`` produces requests to the input topic and resolves each one's
future from the result and dead-letter topics (one background consumer per
client). See docs/client.md.
"""

from torchkafka.client._client import Client, Submission
from torchkafka.client._errors import (
    ClientClosed,
    ClientError,
    DeadLettered,
    RequestTimedOut,
    SendFailed,
    TooManyInFlight,
)

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "DeadLettered",
    "RequestTimedOut",
    "SendFailed",
    "Submission",
    "TooManyInFlight",
]
