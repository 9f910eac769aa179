"""Retry tiers: model errors go to the next tier's topic until the tiers run out."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from torchkafka.codecs import ATTEMPTS_HEADER
from torchkafka.worker.pipeline import ResultMessage, RetryTiers, attempts_before
from torchkafka.worker.pipeline._records import Record

TIERS = ("in.retry.1", "in.retry.2")


def record(headers: list[tuple[str, str | bytes | None]] | None = None) -> Record:
    return Record("in", 0, 7, None, b"", headers or [], time.monotonic())


class Recorder:
    """A publisher that remembers where each dead letter went, and its attempts."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, int]] = []
        self.published: list[ResultMessage] = []

    def results(self, results: Sequence[ResultMessage]) -> None:
        self.published += results

    def dead_letter(
        self,
        record: Record,
        reason: str,
        error: str,
        request_id: str | None = None,
        attempts: int = 1,
        topic: str | None = None,
    ) -> None:
        self.sent.append((reason, topic, attempts))


def after(failed: str | bytes | None) -> Record:
    return record([("trace", b"t"), (ATTEMPTS_HEADER, failed)])


@pytest.mark.parametrize(
    ("attempts_header", "expected"),
    [(None, 0), (b"1", 1), ("2", 2), (b"x", 0), (b"-1", 0)],
)
def test_the_failed_runs_before_come_from_the_attempts_header(
    attempts_header: bytes | str | None, expected: int
) -> None:
    assert attempts_before(after(attempts_header) if attempts_header else record()) == expected


def test_a_model_error_climbs_the_tiers_then_is_dead_lettered() -> None:
    recorder = Recorder()
    tiers = RetryTiers(recorder, TIERS)
    tiers.dead_letter(record(), "model_error", "boom")
    tiers.dead_letter(after(b"1"), "model_error", "boom")
    tiers.dead_letter(after(b"2"), "model_error", "boom")
    assert recorder.sent == [
        ("model_error", "in.retry.1", 1),
        ("model_error", "in.retry.2", 2),
        ("model_error", None, 3),
    ]


def test_results_pass_through() -> None:
    recorder = Recorder()
    message = ResultMessage(record(), "r", b"v")
    RetryTiers(recorder, TIERS).results([message])
    assert recorder.published == [message]


def test_other_reasons_are_dead_lettered_at_once_with_the_runs_counted() -> None:
    recorder = Recorder()
    tiers = RetryTiers(recorder, TIERS)
    tiers.dead_letter(record(), "expired", "late")
    tiers.dead_letter(after(b"1"), "expired", "late")
    assert recorder.sent == [("expired", None, 1), ("expired", None, 2)]
