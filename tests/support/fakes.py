"""In-memory stand-ins for the pipeline's interfaces, for unit tests: no broker, no Redis."""

from __future__ import annotations

from collections.abc import Sequence
from time import monotonic as now

from torchkafka.codecs import Result, decode_result
from torchkafka.worker import DedupStateLost, DeliveryFailed, TransientError
from torchkafka.worker.pipeline import (
    Claims,
    Delivery,
    Handoff,
    Outcome,
    Place,
    Record,
    ResultMessage,
)


class MemoryOutbox:
    """An ``Outbox``: keeps what is published, and acknowledges it on ``completed``.

    ``published`` holds decoded results by request id; ``dead_letters`` the
    (reason, error) by request id (None when the request could not be read),
    ``reasons`` every dead letter's reason in order. Set ``refuse`` to make the
    broker refuse the deliveries of those request ids, and ``raise_on_result`` to
    make publishing a result raise (a bug in the publishing thread).
    """

    def __init__(self) -> None:
        self.published: dict[str, Result] = {}
        self.dead_letters: dict[str | None, tuple[str, str]] = {}
        self.reasons: list[str] = []
        self.refuse: set[str] = set()
        self.raise_on_result: Exception | None = None
        self._pending: Handoff[Delivery] = Handoff()

    def results(self, results: Sequence[ResultMessage]) -> None:
        if self.raise_on_result is not None:
            raise self.raise_on_result
        for result in results:
            self.published[result.request_id] = decode_result(result.value)
            failed = self._error(result.request_id)
            delivery = Delivery(result.record, Outcome.RESULT, failed, result.request_id, now())
            self._deliver(delivery)

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        self.dead_letters[request_id] = (reason, error)
        self.reasons.append(reason)
        failed = self._error(request_id)
        self._deliver(Delivery(record, Outcome.DEAD_LETTER, failed, request_id, now()))

    def completed(self, timeout_s: float = 0.0) -> list[Delivery]:
        return self._pending.take(timeout_s)

    def flush(self, timeout_s: float) -> int:
        return 0

    def outputs(self) -> dict[str, list[float]]:
        """Each result's ``output`` tensor as a list, by request id."""
        return {rid: result.outputs["output"].tolist() for rid, result in self.published.items()}

    def _error(self, request_id: str | None) -> DeliveryFailed | None:
        if request_id in self.refuse:
            return DeliveryFailed(f"delivery of {request_id} refused (test)", "_MSG_TIMED_OUT")
        return None

    def _deliver(self, delivery: Delivery) -> None:
        self._pending.put([delivery])


class MemoryDedup:
    """A ``Dedup`` in a dict: done ids (and who marked them), claims by owner; also a ``RunLog``.

    ``down`` makes every call fail as an outage; ``state_lost`` as a Redis that
    lost its done-marks (under the ``pause`` policy). ``runs`` holds the run
    ids that marked each place; ``run_log_calls`` counts the ``RunLog`` calls.
    """

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.done_by: dict[str, str] = {}
        self.claims: dict[str, str] = {}
        self.released: list[str] = []
        self.down = False
        self.state_lost = False
        self.runs: dict[Place, set[str]] = {}
        self.run_log_calls = 0

    def claim(self, ids: Sequence[str], owner: str, fencing_token: int) -> Claims:
        self._check()
        done = {i for i in ids if i in self.done}
        for i in ids:
            if i not in done:
                self.claims.setdefault(i, owner)
        return Claims(done, {i for i in ids if i not in done and self.claims[i] == owner})

    def renew(self, ids: Sequence[str], owner: str, fencing_token: int) -> set[str]:
        """As the store: a claim ``owner``'s own done-mark replaced counts as renewed."""
        self._check()
        return {
            i
            for i in ids
            if self.claims.get(i) == owner or (i in self.done and self.done_by.get(i) == owner)
        }

    def mark_done(self, ids: Sequence[str], owner: str, fencing_token: int) -> None:
        self._check()
        self.done.update(ids)
        for i in ids:
            self.done_by[i] = owner
            self.claims.pop(i, None)

    def release(self, ids: Sequence[str], owner: str) -> None:
        self._check()
        for i in ids:
            if self.claims.get(i) == owner:
                del self.claims[i]
                self.released.append(i)

    def mark_running(
        self, run_id: str, places: Sequence[Place], finished: Sequence[Place], suspect: bool
    ) -> list[int]:
        self._run_log_call(finished)
        counts = [len(self.runs.get(place, set()) - {run_id}) for place in places]
        if suspect or not any(counts):
            for place in places:
                self.runs.setdefault(place, set()).add(run_id)
        return counts

    def forget_run(self, run_id: str, running: Sequence[Place], finished: Sequence[Place]) -> None:
        self._run_log_call(finished)
        for place in running:
            self.runs.get(place, set()).discard(run_id)

    def _run_log_call(self, finished: Sequence[Place]) -> None:
        self.run_log_calls += 1
        self._check_up()
        for place in finished:
            self.runs.pop(place, None)

    def _check_up(self) -> None:
        if self.down:
            raise TransientError("redis is away (test)")

    def _check(self) -> None:
        self._check_up()
        if self.state_lost:
            raise DedupStateLost("redis lost its done-marks (test)")
