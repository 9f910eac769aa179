"""``torchkafka topics create`` asks for the worker's topics with their size limits aligned."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from confluent_kafka.admin import AdminClient

from torchkafka.topology import TopicSpec, worker_topics
from torchkafka.worker import cli


def test_topics_create_sets_the_size_limits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[TopicSpec] = []

    def create(_admin: AdminClient, specs: Sequence[TopicSpec]) -> list[str]:
        asked.extend(specs)
        return [spec.name for spec in specs]

    monkeypatch.setattr("torchkafka.topology.ensure_topics", create)
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)
    argv = ["topics", "create", "--input-topic", "in", "--output-topic", "out"]
    assert cli.main([*argv, "--dead-letter-topic", "dlq", "--partitions", "6"]) == 0
    assert asked == worker_topics("in", "out", "dlq", partitions=6)
    assert [spec.config["max.message.bytes"] for spec in asked] == [
        "16842752",  # 16 MiB + 64 KiB: a request at the worker's limit, its key and headers
        "16847872",  # 5 KiB more: the dead letter of such a record, and batch framing
        "16847872",
    ]
    assert capsys.readouterr().out == "in: created\nout: created\ndlq: created\n"
