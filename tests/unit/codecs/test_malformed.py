"""Every malformed request raises its own error type with its stable reason."""

import pytest

from torchkafka.codecs import DecodeError, Reason, decode_request
from torchkafka.codecs.testing import MalformedCase, malformed_corpus

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
