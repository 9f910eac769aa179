"""Every malformed request raises its own error type with its stable reason."""

import pytest

from torchkafka.codecs import DecodeError, MalformedMessage, Reason, decode_request
from torchkafka.codecs.testing import (
    REMOVE,
    MalformedCase,
    malformed_corpus,
    pack,
    request_map,
    tensor_map,
)

CORPUS = malformed_corpus()


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_each_malformed_request_raises_its_specific_error(case: MalformedCase) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_request(case.data)
    assert type(caught.value) is case.error
    assert caught.value.reason is case.error.reason
    assert str(caught.value).startswith(caught.value.path + ": ")


def test_the_corpus_covers_every_codec_reason() -> None:
    covered = {case.error.reason for case in CORPUS}
    assert covered == set(Reason)


def test_error_paths_name_the_offending_field() -> None:
    by_name = {case.name: case for case in CORPUS}
    with pytest.raises(DecodeError) as caught:
        decode_request(by_name["negative dimension"].data)
    assert caught.value.path == "$.inputs['x'].shape[0]"
    assert "-2" in caught.value.detail


def test_a_record_without_value_is_malformed_msgpack() -> None:
    """A tombstone (a Kafka record whose value is null) is not one msgpack value."""
    with pytest.raises(MalformedMessage) as caught:
        decode_request(None)
    assert str(caught.value) == "$: no value: the record's value is null (a tombstone)"


#: The stable start of each malformed_msgpack error (docs/wire-format.md lists them).
MALFORMED_TEXTS = {
    "empty message": "$: empty: a message of 0 bytes holds no msgpack value",
    "reserved msgpack byte": "$: invalid byte: 0xc1",
    "truncated": "$: truncated: the data ends inside a value",
    "trailing bytes": "$: trailing bytes: the value ends at byte ",
    "invalid utf-8 string": "$: invalid UTF-8: byte 0 of a string is 0xff",
    "integer map key": "$: map key not a string: a map has a key that is an integer",
    "binary map key": "$: map key not a string: a map has a key that is binary",
    "duplicate map key": "$: duplicate map key: 'id' is in one map twice",
    "timestamp ext of 3 bytes in meta": "$: invalid timestamp: ext type -1 of 3 bytes",
    "nesting too deep": "$: nested too deeply: over 1024 containers",
}


def test_malformed_msgpack_errors_start_with_a_stable_phrase_not_the_librarys() -> None:
    malformed = [case for case in CORPUS if case.error is MalformedMessage]
    assert {case.name for case in malformed} == set(MALFORMED_TEXTS)
    for case in malformed:
        with pytest.raises(MalformedMessage) as caught:
            decode_request(case.data)
        assert str(caught.value).startswith(MALFORMED_TEXTS[case.name]), case.name


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x81\xc0\x01", "nil"),
        (b"\x81\xca\x00\x00\x00\x00\x01", "a float"),
        (b"\x81\xc3\x01", "a boolean"),
        (b"\x81\x90\x01", "an array"),
        (b"\x81\x80\x01", "a map"),
        (b"\x81\xd4\x01\x00\x01", "an ext value"),
        (b"\x81\xd6\xff\x00\x00\x00\x01\x01", "a timestamp"),
    ],
)
def test_every_map_key_that_is_not_a_string_is_refused(data: bytes, kind: str) -> None:
    with pytest.raises(MalformedMessage, match=rf"^\$: map key not a string: .* is {kind}$"):
        decode_request(data)


@pytest.mark.parametrize(
    "meta",
    [{1: "a"}, {b"k": "a"}, {"a": {"b": 1, b"c": 2}}],
    ids=["integer key", "binary key", "nested binary key"],
)
def test_meta_maps_have_string_keys_too(meta: object) -> None:
    with pytest.raises(MalformedMessage, match="map key not a string"):
        decode_request(pack(request_map(meta=meta)))


def test_a_key_repeated_in_any_map_is_refused() -> None:
    tensor = pack(tensor_map())
    x_twice = b"\x82" + pack("x") + tensor + pack("x") + tensor
    head = pack(request_map(inputs=REMOVE))  # {"v": 1, "id": "case-1"}: a fixmap of 2
    data = bytes([head[0] + 1]) + head[1:] + pack("inputs") + x_twice
    with pytest.raises(MalformedMessage, match=r"^\$: duplicate map key: 'x' is in one map twice$"):
        decode_request(data)
    meta = pack(request_map(meta=None))[:-1] + b"\x82\xa1a\x01\xa1a\x02"
    with pytest.raises(MalformedMessage, match="duplicate map key: 'a'"):
        decode_request(meta)
