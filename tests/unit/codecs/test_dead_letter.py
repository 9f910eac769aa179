"""Dead-letter headers keep the original ones and add why, where and when."""

import dataclasses

import pytest

from torchkafka.codecs import DeadLetterInfo, Reason, dead_letter_headers, read_dead_letter_info

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
    original = [("traceparent", b"00-abc"), ("empty", None)]
    headers = dead_letter_headers(original, INFO)
    assert headers[:2] == [("traceparent", b"00-abc"), ("empty", b"")]
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
