"""Selecting and describing dead letters: times, reasons, ids, values decoded as far as they go."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest
import torch

from torchkafka.codecs import DeadLetterInfo, Encoder, Request, request_id_of
from torchkafka.worker.tools import Selection, parse_time_ms
from torchkafka.worker.tools._dlq_read import DeadLetter

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T12:00:00Z", NOW_MS),
        ("2026-12-06T12:00:00", NOW_MS),  # no zone: UTC
        ("2026-12-06T13:00:00+01:00", NOW_MS),
        ("90s", NOW_MS - 90_000),
        ("30m", NOW_MS - 1_800_000),
        ("2h", NOW_MS - 7_200_000),
        ("7d", NOW_MS - 7 * 86_400_000),
    ],
)
def test_times_are_iso_or_a_duration_ago(text: str, expected: int) -> None:
    assert parse_time_ms(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h30m", "-5m", "12"])
def test_other_times_are_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO-8601 time nor a duration like 30m"):
        parse_time_ms(text, NOW)


def letter(
    reason: str | None, request_id: str | None, at_ms: int, value: bytes | None = b""
) -> DeadLetter:
    info = None if reason is None else DeadLetterInfo(reason, "e", "in", 0, 1, 1, "w", at_ms)
    return DeadLetter(0, 1, at_ms, None, value, [], info, request_id)


def test_a_selection_takes_by_reason_id_and_time() -> None:
    a = letter("model_error", "a", 1_000)
    b = letter("expired", "b", 2_000)
    c = letter(None, None, 3_000)
    everything = Selection()
    assert [everything.takes(x) for x in (a, b, c)] == [True, True, True]
    assert [Selection(reasons=frozenset({"expired", "unknown"})).takes(x) for x in (a, b, c)] == [
        False, True, True,
    ]  # fmt: skip
    assert [Selection(ids=frozenset({"a"})).takes(x) for x in (a, b, c)] == [True, False, False]
    window = Selection(since_ms=2_000, until_ms=3_000)
    assert [window.takes(x) for x in (a, b, c)] == [False, True, False]


def test_values_are_described_as_far_as_they_decode() -> None:
    value = Encoder().request(Request(id="r-1", inputs={"x": torch.zeros(2, 3, dtype=torch.int16)}))
    assert letter("x", "r-1", 0, value).describe_value() == (
        "request 'r-1', inputs x: tensor int16 [2, 3]"
    )
    assert (
        letter("x", None, 0, b"\xc1").describe_value().startswith("1 bytes, not a valid request: ")
    )
    assert letter("x", None, 0, None).describe_value() == (
        "no value (the input had none, or it was left out: see the error)"
    )


def test_the_id_is_read_from_any_map_and_nothing_else() -> None:
    assert request_id_of(msgpack.packb({"v": 99, "id": "kept", 1: 2})) == "kept"
    assert request_id_of(msgpack.packb({"id": 5})) is None
    assert request_id_of(msgpack.packb([1, 2])) is None
    assert request_id_of(b"\xc1") is None
    assert request_id_of(None) is None
