"""Dead-letter headers keep the original ones and add why, where and when."""

import dataclasses

import pytest

from torchkafka.codecs import (
    MAX_ERROR_BYTES,
    DeadLetterInfo,
    Reason,
    dead_letter_headers,
    read_dead_letter_info,
)

INFO = DeadLetterInfo(
    reason=Reason.PAYLOAD_SIZE_MISMATCH,
    error="$.inputs['x'].data: 15 bytes, but float32 [2, 2] needs 16",
    source_topic="requests",
    source_partition=3,
    source_offset=1234,
    attempts=1,
    worker="host-a/1",
    time_ms=1767225600000,
)


def test_headers_round_trip_and_keep_the_originals() -> None:
    original = [("traceparent", b"00-abc"), ("null", None), ("empty", b"")]
    headers = dead_letter_headers(original, INFO)
    assert headers[:3] == original, "a header without a value stays without one"
    assert ("torchkafka.reason", b"payload_size_mismatch") in headers
    assert ("torchkafka.source.offset", b"1234") in headers
    assert read_dead_letter_info(headers) == INFO


def test_dead_lettering_twice_replaces_the_earlier_reason() -> None:
    first = dead_letter_headers([], INFO)
    again = dead_letter_headers(first, dataclasses.replace(INFO, attempts=2))
    assert [key for key, _ in again].count("torchkafka.reason") == 1
    assert read_dead_letter_info(again).attempts == 2


def test_reading_headers_that_are_not_a_dead_letter_fails() -> None:
    with pytest.raises(KeyError):
        read_dead_letter_info([("traceparent", b"x")])


@pytest.mark.parametrize("quoted", ["x" * 100_000, "é" * 50_001])
def test_an_error_quoting_huge_input_keeps_its_start_and_end_within_the_bound(quoted: str) -> None:
    error = f"$.v: version {quoted!r}; this reader knows 1 (the value is left out)"
    headers = dead_letter_headers([], dataclasses.replace(INFO, error=error))
    text = dict(headers)["torchkafka.error"]
    assert isinstance(text, bytes)
    assert len(text) <= MAX_ERROR_BYTES
    assert text.startswith(b"$.v: version '")
    assert text.endswith(b"(the value is left out)")
    assert " … " in text.decode()


def test_an_error_within_the_bound_is_kept_whole() -> None:
    error = "e" * MAX_ERROR_BYTES
    assert read_dead_letter_info(
        dead_letter_headers([], dataclasses.replace(INFO, error=error))
    ) == (dataclasses.replace(INFO, error=error))
