"""The request sender: a full queue waited out (or said, for asyncio), deliveries counted."""

from __future__ import annotations

import torch

from tests.support.fake_producer import FakeProducer
from torchkafka.client import RequestSender, SendStats
from torchkafka.codecs import Request, decode_request


def test_request_sender_waits_out_a_full_queue_by_polling_and_drops_nothing() -> None:
    producer = FakeProducer(capacity=2)
    sender = RequestSender(producer, "t")  # type: ignore[arg-type]
    for n in range(7):
        sender.send_encoded(f"k{n}".encode(), b"v" * n)
    stats = sender.flush()
    assert [key for _, key, _ in producer.delivered] == [f"k{n}".encode() for n in range(7)]
    assert stats == SendStats(sent=7, bytes=21, delivered=7, failed=0, errors=[])
    assert any(timeout > 0 for timeout in producer.polls)  # polled to make room


def test_request_sender_counts_delivery_errors_and_keeps_the_first_few() -> None:
    producer = FakeProducer(fail=lambda key: f"refused {key.decode()}" if key != b"ok" else None)
    sender = RequestSender(producer, "t")  # type: ignore[arg-type]
    for key in [b"ok", *(f"bad{n}".encode() for n in range(7))]:
        sender.send_encoded(key, b"v")
    stats = sender.flush()
    assert (stats.sent, stats.delivered, stats.failed) == (8, 1, 7)
    assert stats.errors == [f"refused bad{n}" for n in range(RequestSender.MAX_ERRORS_KEPT)]
    assert "7 delivery errors (first: refused bad0)" in stats.summary(2.0)


def test_request_sender_counts_what_flush_could_not_deliver_as_failed() -> None:
    producer = FakeProducer()
    producer.stuck = 2
    sender = RequestSender(producer, "t")  # type: ignore[arg-type]
    for n in range(3):
        sender.send_encoded(bytes([n]), b"v")
    stats = sender.flush(timeout_s=1)
    assert (stats.delivered, stats.failed) == (1, 2)
    assert stats.errors == ["not acknowledged within 1 s"]


def test_request_sender_poll_rounds_a_wait_up_to_whole_milliseconds() -> None:
    producer = FakeProducer()
    sender = RequestSender(producer, "t")  # type: ignore[arg-type]
    sender.poll(0.0004)
    sender.poll(0.0)
    assert producer.polls == [0.001, 0.0]


def test_send_encodes_the_request_keyed_by_its_id_unless_a_key_is_given() -> None:
    producer = FakeProducer()
    sender = RequestSender(producer, "requests")  # type: ignore[arg-type]
    outcomes: list[object] = []
    sender.send(Request(id="a", inputs={"x": torch.ones(2)}), on_delivery=outcomes.append)
    sender.send(Request(id="b", inputs={"x": torch.ones(2)}), key=b"tenant-7")
    sender.flush()
    assert [key for _, key, _ in producer.delivered] == [b"a", b"tenant-7"]
    sent = decode_request(producer.delivered[0][2]).inputs["x"]
    assert isinstance(sent, torch.Tensor)
    assert sent.tolist() == [1.0, 1.0]
    assert outcomes == [None]  # the caller's callback got the delivery


def test_try_send_says_false_on_a_full_queue_and_queues_nothing() -> None:
    producer = FakeProducer(capacity=1)
    sender = RequestSender(producer, "requests")  # type: ignore[arg-type]
    assert sender.try_send(Request(id="a", inputs={"x": torch.ones(1)}))
    assert not sender.try_send(Request(id="b", inputs={"x": torch.ones(1)}))
    assert (len(producer.queued), sender.stats.sent) == (1, 1)
    sender.flush()
    assert sender.try_send(Request(id="b", inputs={"x": torch.ones(1)}))
