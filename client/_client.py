"""``Client``: send tensors to a torchkafka pipeline and get their results back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from torchkafka.client._errors import ClientClosed, SendFailed
from torchkafka.client._pending import Pending
from torchkafka.client._router import ResultRouter
from torchkafka.codecs import Input, Request, Result, encode_request
from torchkafka.worker.config import KafkaConnection


@dataclass(frozen=True, slots=True)
class Submission:
    """One request of ``submit_many``: the arguments of ``submit``."""

    inputs: Mapping[str, Input]
    id: str | None = None
    meta: Any = None
    deadline_ms: int | None = None
    key: bytes | None = None
    timeout_s: float | None = None


class Client:
    """Submits requests to ``input_topic``; resolves them from ``output_topic`` and
    ``dead_letter_topic`` (one background consumer; thread-safe).

    ``connection``: the worker's ``KafkaConnection`` (security included) or
    librdkafka settings. At most ``max_in_flight`` requests await their
    results (``TooManyInFlight`` past it); each fails with ``RequestTimedOut``
    after ``timeout_s`` (or its own). Use as a context manager, or ``close``.
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
        settings = (
            connection.librdkafka() if isinstance(connection, KafkaConnection) else dict(connection)
        )
        self._input_topic = input_topic
        self._timeout_s = timeout_s
        self._pending: Pending[Result] = Pending(max_in_flight)
        self._producer = Producer({**settings, "enable.idempotence": True, "linger.ms": 2})
        consumer = Consumer(
            {
                **settings,
                "group.id": f"torchkafka-client-{uuid.uuid4().hex[:12]}",  # assigned: never joined
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._router = ResultRouter(consumer, output_topic, dead_letter_topic, self._pending)
        self._router.start(start_timeout_s)
        self._closed = False

    def submit(
        self,
        inputs: Mapping[str, Input],
        *,
        id: str | None = None,
        meta: Any = None,
        deadline_ms: int | None = None,
        key: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Future[Result]:
        """Send one request; a future of its ``Result`` (or ``DeadLettered``,
        ``RequestTimedOut``, ``SendFailed``, ``ClientClosed``).

        ``id`` defaults to a new uuid4; a caller's own id makes a resubmission
        (after a timeout, a crash) idempotent: the worker answers an id once.
        ``key`` defaults to the id's UTF-8 bytes. The request is sent once the
        producer's batch goes (``flush`` to wait).
        """
        future = self._send(Submission(inputs, id, meta, deadline_ms, key, timeout_s))
        self._producer.poll(0)
        return future

    def submit_many(self, submissions: Sequence[Submission]) -> list[Future[Result]]:
        """Send many requests with one flush; their futures, in order."""
        futures = [self._send(submission) for submission in submissions]
        self._producer.flush()
        return futures

    def infer(
        self,
        inputs: Mapping[str, Input],
        *,
        id: str | None = None,
        meta: Any = None,
        deadline_ms: int | None = None,
        key: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Result:
        """``submit`` and wait for the outcome: the ``Result``, or its error raised."""
        future = self.submit(
            inputs, id=id, meta=meta, deadline_ms=deadline_ms, key=key, timeout_s=timeout_s
        )
        self._producer.flush()
        return future.result()

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until the submitted requests are on the input topic; how many are not."""
        return int(self._producer.flush(timeout_s))

    @property
    def in_flight(self) -> int:
        """Requests awaiting their outcome."""
        return len(self._pending)

    def close(self) -> None:
        """Send what is queued, stop reading, and fail what still waits (``ClientClosed``)."""
        if self._closed:
            return
        self._closed = True
        self._producer.flush(10)
        self._router.stop()
        self._pending.reject_all(ClientClosed("the client was closed"))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, submission: Submission) -> Future[Result]:
        if self._closed:
            raise ClientClosed("the client is closed")
        request_id = submission.id or uuid.uuid4().hex
        value = encode_request(
            Request(
                id=request_id,
                inputs=dict(submission.inputs),
                meta=submission.meta,
                deadline_ms=submission.deadline_ms,
            )
        )
        timeout_s = self._timeout_s if submission.timeout_s is None else submission.timeout_s
        future = self._pending.add(request_id, time.monotonic() + timeout_s)

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._pending.reject(request_id, SendFailed(f"{request_id!r}: {error.str()}"))

        while True:
            try:
                self._producer.produce(
                    self._input_topic,
                    value=value,
                    key=submission.key or request_id.encode(),
                    on_delivery=delivered,
                )
                return future
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused at once: too large, an unknown topic
                self._pending.reject(request_id, SendFailed(f"{request_id!r}: {exc}"))
                return future
