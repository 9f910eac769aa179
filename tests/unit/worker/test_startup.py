"""Start-up waits for Kafka and Redis within ``startup_timeout_s``, then says why in one line."""

from __future__ import annotations

import logging
import time
from typing import cast

import pytest
import redis
from confluent_kafka import KafkaError
from redis import exceptions as rx
from structlog.testing import capture_logs

from tests.support.ports import free_port
from torchkafka.worker import StartupError, _redis_setup
from torchkafka.worker.config import DedupSettings, build_config
from torchkafka.worker.kafka import check_topics
from torchkafka.worker.kafka._clients import ClientReport

REQUIRED = {"model": "python:m:f", "input_topic": "in", "output_topic": "out"}
LINE = "%s [%s] %s"  # how librdkafka calls a logger: facility, client name, text


def said(report: ClientReport, level: int, text: str) -> None:
    report.log(level, LINE, "FAIL", "rdkafka#producer-1", f"[thrd:b:9092/bootstrap]: {text}")


def test_a_client_report_names_the_most_severe_then_the_most_repeated_line() -> None:
    report = ClientReport()
    assert report.cause() is None
    said(report, logging.INFO, "b:9092/bootstrap: Disconnected (after 3ms in state UP)")
    said(report, logging.ERROR, "b:9092/bootstrap: Connect failed (after 0ms in state CONNECT)")
    for ms in (1, 2):  # one failure, however long it took
        said(report, logging.ERROR, f"b:9092/bootstrap: SSL failed (after {ms}ms in state SSL)")
    assert report.cause() == "b:9092/bootstrap: SSL failed (in state SSL)"


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        (KafkaError._AUTHENTICATION, True),
        (KafkaError._SSL, True),
        (KafkaError._TRANSPORT, False),
        (KafkaError._ALL_BROKERS_DOWN, False),
    ],
)
def test_a_client_report_is_refused_by_credentials_or_tls_not_by_a_broker_away(
    code: int, refused: bool
) -> None:
    report = ClientReport()
    report.error(KafkaError(code, "what the client saw"))
    assert report.refused is refused


def test_a_broker_nobody_listens_on_is_one_startup_error_after_the_timeout() -> None:
    port = free_port()
    config = build_config(
        {**REQUIRED, "dead_letter_topic": "d", "bootstrap": f"127.0.0.1:{port}"}
        | {"startup_timeout_s": 1.5}
    )
    began = time.monotonic()
    with capture_logs() as logs, pytest.raises(StartupError) as error:
        check_topics(config, began + 1.5)
    assert 1.5 <= time.monotonic() - began < 3.0
    assert f"Kafka at 127.0.0.1:{port} does not answer within 1.5 s: " in str(error.value)
    assert "Connection refused" in str(error.value)
    assert logs == []  # the client's errors are in the one line, not logged one by one


class Pings:
    """A Redis client whose PINGs raise ``errors`` in turn, then answer."""

    def __init__(self, *errors: rx.RedisError) -> None:
        self.errors = list(errors)

    def ping(self) -> bool:
        if self.errors:
            raise self.errors.pop(0)
        return True

    def client(self) -> redis.Redis:
        return cast(redis.Redis, self)


def test_redis_that_comes_up_within_the_timeout_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_redis_setup, "REDIS_RETRY_S", 0.01)
    pings = Pings(rx.ConnectionError("refused"), rx.TimeoutError("timed out"))
    _redis_setup._wait_for_redis(pings.client(), 30, time.monotonic() + 30)
    assert pings.errors == []


@pytest.mark.parametrize(
    "answer",
    [rx.AuthenticationError("invalid password"), rx.ResponseError("NOPERM")],
    ids=["refused-credentials", "an-error-reply"],
)
def test_redis_that_answers_at_all_ends_the_wait_for_the_store_to_judge(
    answer: rx.RedisError,
) -> None:
    pings = Pings(answer, rx.ConnectionError("never asked again"))
    _redis_setup._wait_for_redis(pings.client(), 30, time.monotonic() + 30)
    assert len(pings.errors) == 1


def test_redis_nobody_listens_on_is_a_startup_error_naming_it_after_the_timeout() -> None:
    settings = DedupSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = _redis_setup.redis_client(settings, "test")  # the worker's own: no retries of its own
    began = time.monotonic()
    with pytest.raises(StartupError, match=r"redis does not answer within 1 s: .*refused"):
        _redis_setup._wait_for_redis(client, 1.0, began + 1.0)
    assert 1.0 <= time.monotonic() - began < 2.5
    client.close()


def test_readiness_hears_of_redis_through_one_ping() -> None:
    assert _redis_setup.redis_problem(Pings().client()) is None
    refused = Pings(rx.ConnectionError("Error 111 connecting to 127.0.0.1:6390."))
    assert _redis_setup.redis_problem(refused.client()) == (
        "redis is unusable: Error 111 connecting to 127.0.0.1:6390."
    )
