"""Foreign errors stop at the process and command boundary: one clear line and an exit code."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException
from structlog.testing import capture_logs

from torchkafka.topology import TopologyError
from torchkafka.worker import app, cli
from torchkafka.worker.config import build_config

CONFIG = build_config(
    {"model": "python:m:f", "input_topic": "in", "output_topic": "out", "dead_letter_topic": "d"}
)


def test_a_kafka_error_out_of_the_worker_is_one_log_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def all_brokers_down(*_args: object) -> None:
        raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers are down"))

    monkeypatch.setattr(app, "run_worker", all_brokers_down)
    monkeypatch.setattr(app, "stop_on_signals", threading.Event)
    monkeypatch.setattr(app, "reload_on_sighup", threading.Event)
    with capture_logs() as logs:
        assert app.run_in_this_process(CONFIG) == 1
    assert logs == [
        {
            "event": "worker stopped on a Kafka error",
            "error": "all brokers are down",
            "code": "_ALL_BROKERS_DOWN",
            "log_level": "error",
        }
    ]


def test_a_refused_topic_creation_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*_args: object) -> list[str]:
        raise TopologyError("cannot describe topic 'in': Authorization failed")

    monkeypatch.setattr("torchkafka.worker.tools._topics.describe_topics", refused)
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    argv = ["topics", "create", "--input-topic", "in", "--output-topic", "out"]
    assert cli.main([*argv, "--dead-letter-topic", "dlq"]) == 1
    assert capsys.readouterr().err == (
        "torchkafka topics create: cannot describe topic 'in': Authorization failed\n"
    )


def test_a_bad_connection_setting_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    argv = ["consume", "--topic", "t", "--security-protocol", "sasl_ssl"]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "security_protocol sasl_ssl needs sasl_username" in capsys.readouterr().err
