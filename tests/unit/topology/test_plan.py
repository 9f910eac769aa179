"""A plan creates, adds partitions and sets configs; it never shrinks, deletes or unsets."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from torchkafka.topology import (
    Action,
    PartitionState,
    TopicSpec,
    TopicState,
    TopologyError,
    plan_topics,
    worker_topics,
)


def state(
    name: str,
    partitions: int,
    replicas: int = 1,
    configs: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> TopicState:
    parts = tuple(
        PartitionState(p, 1, tuple(range(replicas)), tuple(range(replicas)))
        for p in range(partitions)
    )
    return TopicState(name, parts, {**(configs or {}), **(overrides or {})}, overrides or {})


def test_a_missing_topic_is_created_with_its_configs() -> None:
    spec = TopicSpec("t", 3, 2, {"retention.ms": "1000"})
    plan = plan_topics([spec], {"t": None})
    assert [(c.action, c.spec) for c in plan.changes] == [(Action.CREATE, spec)]
    assert plan.changes[0].detail == "partitions 3, replication factor 2; retention.ms=1000"
    assert plan.kept == ()
    assert not plan.in_sync


def test_a_matching_topic_needs_nothing() -> None:
    spec = TopicSpec("t", 3, 1, {"retention.ms": "1000"})
    plan = plan_topics([spec], {"t": state("t", 3, configs={"retention.ms": "1000"})})
    assert plan.in_sync
    assert plan.kept == ()


def test_partitions_are_added_never_removed() -> None:
    grow = plan_topics([TopicSpec("t", 6)], {"t": state("t", 4)})
    assert [(c.action, c.detail) for c in grow.changes] == [
        (Action.ADD_PARTITIONS, "4 -> 6 partitions (keys map to new partitions)")
    ]
    shrink = plan_topics([TopicSpec("t", 2)], {"t": state("t", 4)})
    assert shrink.in_sync
    assert shrink.kept == ("t: 4 partitions, 2 declared (Kafka cannot remove partitions)",)


def test_a_different_replication_factor_is_left_and_said() -> None:
    plan = plan_topics([TopicSpec("t", 1, 3)], {"t": state("t", 1, replicas=1)})
    assert plan.in_sync
    assert plan.kept == (
        "t: replication factor 1, 3 declared (a partition reassignment changes it, "
        "not this command)",
    )


def test_configs_that_differ_are_set_and_undeclared_ones_left() -> None:
    spec = TopicSpec("t", 1, 1, {"retention.ms": "1000", "min.insync.replicas": "2"})
    observed = state(
        "t", 1, configs={"min.insync.replicas": "2", "retention.ms": "604800000"},
        overrides={"cleanup.policy": "compact"},
    )  # fmt: skip
    plan = plan_topics([spec], {"t": observed})
    (change,) = plan.changes
    assert change.action is Action.SET_CONFIGS
    assert change.configs == {"retention.ms": "1000"}
    assert change.detail == "retention.ms: 604800000 -> 1000"
    assert plan.kept == ("t: set on the topic, not declared: cleanup.policy",)


def test_worker_topics_take_configs_by_role_and_keep_the_size_floor() -> None:
    specs = worker_topics(
        "in", "out", "dlq", 4, 3,
        dead_letter_partitions=2,
        configs={"dead-letter": {"retention.ms": "1"}, "input": {"max.message.bytes": "99999999"}},
    )  # fmt: skip
    assert [(s.name, s.partitions, s.replication_factor) for s in specs] == [
        ("in", 4, 3), ("out", 4, 3), ("dlq", 2, 3),
    ]  # fmt: skip
    assert specs[0].config == {"max.message.bytes": "99999999"}
    assert specs[2].config == {"max.message.bytes": "16847872", "retention.ms": "1"}


@pytest.mark.parametrize(
    ("configs", "error"),
    [
        ({"output": {"max.message.bytes": "1000"}}, "must be at least 16847872 .* got '1000'"),
        ({"input": {"max.message.bytes": "lots"}}, "must be at least 16842752 .* got 'lots'"),
        ({"requests": {}}, r"unknown topic roles \['requests'\]"),
    ],
)
def test_worker_topics_refuse_what_the_worker_cannot_use(
    configs: dict[str, dict[str, str]], error: str
) -> None:
    with pytest.raises(TopologyError, match=error):
        worker_topics("in", "out", "dlq", configs=configs)
