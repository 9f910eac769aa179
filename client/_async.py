"""``AsyncClient``: the client's methods as coroutines, for asyncio applications."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from torchkafka.client._client import Client, Submission
from torchkafka.client._errors import ClientClosed
from torchkafka.client._stream import ResultStream
from torchkafka.codecs import Input, Result
from torchkafka.worker.config import KafkaConnection

#: How long ``submit`` sleeps while the producer's local queue is full.
FULL_QUEUE_PAUSE_S = 0.005


class AsyncClient:
    """A ``Client`` for asyncio: the same arguments, methods as coroutines.

    Start it with ``async with AsyncClient(...) as client`` or ``await
    client.start()`` (in a server's startup). It keeps the ``Client``'s one
    background consumer thread and no thread per request: each future is
    settled on the event loop it was submitted from. Nothing here blocks the
    loop: a full producer queue is awaited, and starting, flushing and
    closing run on a worker thread.
    """

    def __init__(
        self,
        connection: KafkaConnection | Mapping[str, str],
        input_topic: str,
        output_topic: str,
        dead_letter_topic: str,
        *,
        max_in_flight: int = 10_000,
        timeout_s: float = 60.0,
        start_timeout_s: float = 30.0,
    ) -> None:
        self._open = functools.partial(
            Client,
            connection,
            input_topic,
            output_topic,
            dead_letter_topic,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            start_timeout_s=start_timeout_s,
        )
        self._client: Client | None = None

    async def start(self) -> None:
        """Connect: read the topics' ends and start the background consumer."""
        if self._client is None:
            self._client = await asyncio.to_thread(self._open)

    async def submit(
        self,
        inputs: Mapping[str, Input],
        *,
        id: str | None = None,
        meta: Any = None,
        deadline_ms: int | None = None,
        key: bytes | None = None,
        timeout_s: float | None = None,
    ) -> asyncio.Future[Result]:
        """Send one request; an asyncio future of its ``Result`` (errors as ``Client.submit``)."""
        return await self._submit(Submission(inputs, id, meta, deadline_ms, key, timeout_s))

    async def submit_many(self, submissions: Sequence[Submission]) -> list[asyncio.Future[Result]]:
        """Send many requests with one flush; their futures, in order."""
        futures = [await self._submit(submission) for submission in submissions]
        await self.flush()
        return futures

    async def infer(
        self,
        inputs: Mapping[str, Input],
        *,
        id: str | None = None,
        meta: Any = None,
        deadline_ms: int | None = None,
        key: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Result:
        """``submit`` and await the outcome: the ``Result``, or its error raised."""
        return await (
            await self.submit(
                inputs, id=id, meta=meta, deadline_ms=deadline_ms, key=key, timeout_s=timeout_s
            )
        )

    async def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until the submitted requests are on the input topic; how many are not."""
        return await asyncio.to_thread(self._started().flush, timeout_s)

    @property
    def in_flight(self) -> int:
        """Requests awaiting their outcome."""
        return 0 if self._client is None else self._client.in_flight

    def results(self) -> ResultStream:
        """``Client.results``: use it with ``async for`` (and ``await stream.aclose()``)."""
        return self._started().results()

    async def close(self) -> None:
        """``Client.close`` on a worker thread."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _submit(self, submission: Submission) -> asyncio.Future[Result]:
        client = self._started()
        future, request = client._register(submission)
        while not client._queue(request, submission.key, wait=False):
            await asyncio.sleep(FULL_QUEUE_PAUSE_S)
        return asyncio.wrap_future(future)

    def _started(self) -> Client:
        if self._client is None:
            raise ClientClosed("the client is not started: use `async with` or `await start()`")
        return self._client
