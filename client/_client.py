"""``Client``: send tensors to a torchkafka pipeline and get their results back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from torchkafka.client._consumers import result_consumer
from torchkafka.client._errors import ClientClosed, SendFailed
from torchkafka.client._pending import Pending
from torchkafka.client._router import ResultRouter
from torchkafka.client._sending import RequestSender
from torchkafka.client._stream import ResultStream, connection_settings
from torchkafka.codecs import Input, Request, Result
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
        self._settings = connection_settings(connection)
        self._dead_letter_topic = dead_letter_topic
        self._timeout_s = timeout_s
        self._pending: Pending[Result] = Pending(max_in_flight)
        self._producer = Producer({**self._settings, "enable.idempotence": True, "linger.ms": 2})
        self._sender = RequestSender(self._producer, input_topic)
        self._sending = threading.Lock()  # the sender's encoder is reused
        self._router = ResultRouter(
            result_consumer(self._settings),
            output_topic,
            dead_letter_topic,
            self._pending,
            tick=lambda: self._producer.poll(0),  # delivery failures, with nobody submitting
        )
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
        return self._send(Submission(inputs, id, meta, deadline_ms, key, timeout_s))

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
        self._pending.close(ClientClosed("the client was closed"))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def results(self) -> ResultStream:
        """Every outcome published on the output and dead-letter topics since this client
        started (its own requests' and any other producer's), as a ``ResultStream``:
        ``Result``s, and ``DeadLettered`` for dead letters, yielded. Close it when done."""
        consumer = result_consumer(self._settings)
        consumer.assign(self._router.positions)
        return ResultStream(consumer, self._dead_letter_topic)

    def _send(self, submission: Submission) -> Future[Result]:
        future, request = self._register(submission)
        self._queue(request, submission.key, wait=True)
        return future

    def _queue(self, request: Request, key: bytes | None, *, wait: bool) -> bool:
        """Queue ``request`` (waiting out a full local queue, or False at once if not
        ``wait``); a refusal fails its future with ``SendFailed``."""
        on_delivery = self._on_delivery(request.id)
        try:
            with self._sending:
                if wait:
                    self._sender.send(request, key=key, on_delivery=on_delivery)
                    return True
                return self._sender.try_send(request, key=key, on_delivery=on_delivery)
        except KafkaException as exc:  # refused at once: too large, an unknown topic
            self._pending.reject(request.id, SendFailed(f"{request.id!r}: {exc}"))
            return True

    def _register(self, submission: Submission) -> tuple[Future[Result], Request]:
        """The request to send for ``submission``, and the future awaiting its outcome."""
        if self._closed:
            raise ClientClosed("the client is closed")
        request = Request(
            id=submission.id or uuid.uuid4().hex,
            inputs=dict(submission.inputs),
            meta=submission.meta,
            deadline_ms=submission.deadline_ms,
        )
        timeout_s = self._timeout_s if submission.timeout_s is None else submission.timeout_s
        return self._pending.add(request.id, time.monotonic() + timeout_s), request

    def _on_delivery(self, request_id: str) -> Callable[[KafkaError | None], None]:
        def delivered(error: KafkaError | None) -> None:
            if error is not None:
                self._pending.reject(request_id, SendFailed(f"{request_id!r}: {error.str()}"))

        return delivered
