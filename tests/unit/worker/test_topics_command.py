"""``torchkafka topics``: the declared topics from settings, and what each action prints."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence

import pytest
from confluent_kafka.admin import AdminClient

from torchkafka.topology import Plan, TopicState, worker_topics
from torchkafka.worker import cli
from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import build_config
from torchkafka.worker.tools import TopicsAction, declared_topics
from torchkafka.worker.tools import _topics as topics_tool

TOPICS = ["--input-topic", "in", "--output-topic", "out", "--dead-letter-topic", "dlq"]


class FakeCluster:
    """Holds no topic; records what is applied."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[Plan] = []
        monkeypatch.setattr(topics_tool, "describe_topics", self.describe)
        monkeypatch.setattr(topics_tool, "apply_plan", self.apply)
        monkeypatch.setattr(cli, "configure_logging", lambda *_: None)

    def describe(
        self, _admin: AdminClient, names: Sequence[str], _timeout_s: float
    ) -> Mapping[str, TopicState | None]:
        return dict.fromkeys(names)

    def apply(self, _admin: AdminClient, plan: Plan, _timeout_s: float) -> None:
        self.applied.append(plan)


def test_the_action_choices_are_the_tools_actions() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["topics", "undo"])
    for action in typing.get_args(TopicsAction):
        assert cli.build_parser().parse_args(["topics", action]).action == action


def test_declared_topics_follow_the_topics_settings() -> None:
    config = build_config(
        {
            "model": "-", "input_topic": "in", "output_topic": "out", "dead_letter_topic": "dlq",
            "partitions": 6, "dead_letter_partitions": 2, "replication_factor": 3,
            "topic": {"min.insync.replicas": "2", "dead-letter:retention.ms": "5"},
        }
    )  # fmt: skip
    shared = {"min.insync.replicas": "2"}
    assert declared_topics(config) == worker_topics(
        "in", "out", "dlq", 6, 3,
        dead_letter_partitions=2,
        configs={"input": shared, "output": shared, "dead-letter": {**shared, "retention.ms": "5"}},
    )  # fmt: skip


def test_a_topic_config_of_an_unknown_role_is_refused() -> None:
    values = {"model": "-", "input_topic": "i", "output_topic": "o", "dead_letter_topic": "d"}
    with pytest.raises(StartupError, match=r"topic config 'requests:retention\.ms'"):
        build_config({**values, "topic": {"requests:retention.ms": "1"}})


def test_create_creates_the_missing_topics_with_their_size_limits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster(monkeypatch)
    assert cli.main(["topics", "create", *TOPICS, "--partitions", "6"]) == 0
    (plan,) = cluster.applied
    assert [change.spec for change in plan.changes] == worker_topics("in", "out", "dlq", 6)
    assert [change.spec.config["max.message.bytes"] for change in plan.changes] == [
        "16842752",  # 16 MiB + 64 KiB: a request at the worker's limit, its key and headers
        "16847872",  # 5 KiB more: the dead letter of such a record, and batch framing
        "16847872",
    ]
    assert capsys.readouterr().out.splitlines() == [
        "in: created, 6 partitions, replication factor 1",
        "out: created, 6 partitions, replication factor 1",
        "dlq: created, 1 partition, replication factor 1",
        "the dead-letter topic has 1 partition, not 6: it is dead_letter_partitions "
        "(--dead-letter-partitions), --partitions is the other topics'",
    ]


def test_create_says_nothing_more_when_the_dead_letter_topic_has_the_partitions_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeCluster(monkeypatch)
    args = ["--partitions", "3", "--dead-letter-partitions", "3"]
    assert cli.main(["topics", "create", *TOPICS, *args]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "dlq: created, 3 partitions, replication factor 1"
    )


def test_apply_changes_nothing_without_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster(monkeypatch)
    assert cli.main(["topics", "apply", *TOPICS]) == 1
    assert cluster.applied == []
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "create in: partitions 4, replication factor 1; max.message.bytes=16842752"
    assert out[-1] == "nothing applied: run `topics apply --yes` to make these changes"
    assert cli.main(["topics", "apply", *TOPICS, "--yes"]) == 0
    assert len(cluster.applied[0].changes) == 3
    assert capsys.readouterr().out.splitlines()[-1] == "applied"


def test_plan_only_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster(monkeypatch)
    assert cli.main(["topics", "plan", *TOPICS, "--topic-config", "retention.ms=9"]) == 0
    assert cluster.applied == []
    assert "retention.ms=9" in capsys.readouterr().out


def test_retry_tiers_add_their_topics_configured_as_the_dead_letter_topic() -> None:
    config = build_config(
        {
            "model": "-", "input_topic": "in", "output_topic": "out", "dead_letter_topic": "dlq",
            "partitions": 6, "retry_delays_s": "5,60",
        }
    )  # fmt: skip
    assert config.retry_topics == (("in.retry.1", 5), ("in.retry.2", 60))
    specs = declared_topics(config)
    assert [(spec.name, spec.partitions) for spec in specs[3:]] == [
        ("in.retry.1", 6),
        ("in.retry.2", 6),
    ]
    assert specs[3].config == specs[2].config == specs[4].config


def test_a_retry_delay_below_a_second_is_refused() -> None:
    values = {"model": "-", "input_topic": "i", "output_topic": "o", "dead_letter_topic": "d"}
    with pytest.raises(StartupError, match="retry_delays_s must be >= 1 each"):
        build_config({**values, "retry_delays_s": "5,0"})
