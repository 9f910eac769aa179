"""The client library: send tensors to a torchkafka pipeline and get their results back.

``Client`` (and ``AsyncClient``, for asyncio) produces requests to the input
topic and resolves each one's future from the result and dead-letter topics
(one background consumer per client). ``ResultStream`` (``open_results``,
``Client.results``) reads every outcome instead; ``RequestSender`` only sends;
``result_consumer`` and ``join_group`` are for readers of one's own.
See docs/client.md.
"""

from torchkafka.client._async import AsyncClient
from torchkafka.client._client import Client, Submission
from torchkafka.client._consumers import join_group, result_consumer
from torchkafka.client._errors import (
    ClientClosed,
    ClientError,
    DeadLettered,
    RequestTimedOut,
    SendFailed,
    TooManyInFlight,
    UnreadableOutcome,
)
from torchkafka.client._outcomes import Outcome
from torchkafka.client._sending import RequestSender, SendStats, produce_waiting
from torchkafka.client._stream import ResultStream, open_results

__all__ = [
    "AsyncClient",
    "Client",
    "ClientClosed",
    "ClientError",
    "DeadLettered",
    "Outcome",
    "RequestSender",
    "RequestTimedOut",
    "ResultStream",
    "SendFailed",
    "SendStats",
    "Submission",
    "TooManyInFlight",
    "UnreadableOutcome",
    "join_group",
    "open_results",
    "produce_waiting",
    "result_consumer",
]
