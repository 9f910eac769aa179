"""From consumed records to admitted work: decode, pick the input, gate on dedup.

Every record ends in exactly one place: admitted (to be batched), dead-lettered
(bad input: published here), skipped (its id is done, or repeats an id of the
same poll), or parked (another worker holds its id, or Redis is away: try
again later). All of it is cheap: an image input is checked by its header
only, and its pixels are decoded on the image pool once it is admitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from torchkafka.codecs import DecodeError, EncodedImage, Limits, decode_request
from torchkafka.worker._errors import DedupStateLost, TransientError
from torchkafka.worker._reasons import WorkerReason
from torchkafka.worker.pipeline._dedup import Dedup
from torchkafka.worker.pipeline._deliveries import Publisher
from torchkafka.worker.pipeline._images import ImageDecoder
from torchkafka.worker.pipeline._input_spec import InputSpec
from torchkafka.worker.pipeline._records import Admitted, Record

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Admission:
    """Where each record of a poll went."""

    admitted: list[Admitted] = field(default_factory=list)
    skipped: list[Record] = field(default_factory=list)
    parked: list[Admitted] = field(default_factory=list)
    redis_down: bool = False


class Gate:
    """Decodes records and asks Redis which ones to run, in one round trip.

    The images of admitted requests start decoding on ``images``.
    """

    def __init__(
        self,
        publisher: Publisher,
        dedup: Dedup,
        limits: Limits,
        model_input: InputSpec,
        owner: str,
        fail_open: bool,
        images: ImageDecoder,
    ) -> None:
        self._publisher = publisher
        self._images = images
        self._dedup = dedup
        self._limits = limits
        self._input = model_input
        self._owner = owner
        self._fail_open = fail_open
        self._failing_open = False  # logged once per outage, not once per poll
        self._in_flight: set[str] = set()
        self._lost: set[str] = set()  # in flight, and the claim is gone: renewed no more

    def admit(self, records: Sequence[Record], fencing_token: int) -> Admission:
        """Decode ``records`` (dead-lettering bad ones), then gate them on dedup."""
        valid = [item for item in map(self._decode, records) if item is not None]
        return self.gate(valid, fencing_token)

    def gate(self, candidates: Sequence[Admitted], fencing_token: int) -> Admission:
        """Skip ids that are done or repeated, claim the rest; park what is held elsewhere.

        An id this worker is running already (admitted, not yet settled) is
        parked too: Redis would renew this worker's own claim and let the copy
        through, and the done-mark that would stop it is written only later.
        """
        admission = Admission()
        first: dict[str, Admitted] = {}
        for candidate in candidates:
            request_id = candidate.request.id
            if request_id in first:
                admission.skipped.append(candidate.record)
            elif request_id in self._in_flight:
                admission.parked.append(candidate)
            else:
                first[request_id] = candidate
        if not first:
            return admission
        try:
            claims = self._dedup.claim(list(first), self._owner, fencing_token)
            done, claimed = claims.done, claims.held
        except TransientError as exc:
            if not self._fail_open or isinstance(exc, DedupStateLost):
                admission.parked += first.values()
                admission.redis_down = True
                return admission
            if not self._failing_open:
                log.warning("redis away: processing without dedup (fail-open)", error=str(exc))
                self._failing_open = True
            done, claimed = set(), set(first)
        else:
            if self._failing_open:
                log.info("redis answers again: dedup is back on")
                self._failing_open = False
        for request_id, candidate in first.items():
            if request_id in done:
                admission.skipped.append(candidate.record)
            elif request_id in claimed:
                admission.admitted.append(self._started(candidate))
                self._in_flight.add(request_id)
            else:
                admission.parked.append(candidate)
        return admission

    @property
    def fail_open(self) -> bool:
        """Whether work goes on without dedup while Redis is away."""
        return self._fail_open

    def renew(self, fencing_token: int) -> set[str]:
        """Extend the claims on the ids this worker runs; the ids whose claims are newly lost.

        A lost claim (expired, or taken by another worker) means its id may be
        running elsewhere as well; it is reported once and not renewed again.
        If Redis does not answer, the claims are left as they are (the next
        renewal tries again).
        """
        ids = list(self._in_flight - self._lost)
        try:
            renewed = self._dedup.renew(ids, self._owner, fencing_token)
        except TransientError as exc:
            log.warning("could not renew claims", count=len(ids), error=str(exc))
            return set()
        lost = set(ids) - renewed
        self._lost |= lost
        return lost

    def settled(self, ids: Iterable[str]) -> None:
        """``ids`` have their result or dead letter acknowledged: no longer in flight."""
        self._forget(ids)

    def release(self, dropped: Sequence[Admitted]) -> None:
        """Drop admitted or parked work: cancel its image decodes, give up its claims.

        Releasing the claims is best effort: they expire anyway.
        """
        self._images.cancel(a.input for a in dropped)
        self._give_up([a.request.id for a in dropped])

    def release_all(self) -> None:
        """Give up the claims of every id in flight (their work was thrown away: it runs again)."""
        self._give_up(list(self._in_flight))

    def _give_up(self, ids: list[str]) -> None:
        self._forget(ids)
        try:
            self._dedup.release(ids, self._owner)
        except TransientError as exc:
            log.warning(
                "could not release claims; they will expire", count=len(ids), error=str(exc)
            )

    def _forget(self, ids: Iterable[str]) -> None:
        gone = set(ids)
        self._in_flight -= gone
        self._lost -= gone

    def _decode(self, record: Record) -> Admitted | None:
        """The record's request and model input; None when the record is dead-lettered.

        Whatever goes wrong with one record ends as its dead letter: bad input
        under the codec's reason, anything unforeseen as ``internal_error``.
        """
        if record.unreadable is not None:
            detail = f"the record cannot be read ({record.unreadable})"
            self._publisher.dead_letter(record, WorkerReason.UNREADABLE_RECORD, detail)
            return None
        if record.unreadable_headers is not None:
            detail = f"headers cannot be read ({record.unreadable_headers})"
            self._publisher.dead_letter(record, WorkerReason.INVALID_HEADERS, detail)
            return None
        try:
            request = decode_request(record.value, self._limits)
            refused = self._input.refusal(request.inputs)
            if refused is not None:
                self._publisher.dead_letter(record, *refused)
                return None
        except DecodeError as exc:
            self._publisher.dead_letter(record, exc.reason, str(exc))
            return None
        except Exception as exc:  # a decoder bug must not stop the stream: this record only
            log.exception("decoding a record failed unexpectedly", offset=record.offset)
            error = f"{type(exc).__name__}: {exc}"
            self._publisher.dead_letter(record, WorkerReason.INTERNAL_ERROR, error)
            return None
        return Admitted(record, request, request.inputs[self._input.name])

    def _started(self, admitted: Admitted) -> Admitted:
        """``admitted`` with its image's pixels decoding (a tensor input as it is)."""
        image = admitted.input
        if not isinstance(image, EncodedImage):
            return admitted
        return replace(admitted, input=self._images.start(image))
