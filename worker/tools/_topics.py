"""``torchkafka topics``: the worker's declared topics against the cluster.

``plan`` prints what ``apply`` would change; ``apply`` changes it (after
``--yes``); ``create`` only creates what is missing; ``describe`` prints the
topics as the cluster has them; ``lag`` prints the group's lag on the input
topic and who holds which partition.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Literal, TextIO

from torchkafka.topology import (
    Action,
    GroupLag,
    Plan,
    TopicSpec,
    TopicState,
    TopologyError,
    admin_client,
    apply_plan,
    describe_topics,
    group_lag,
    plan_topics,
    worker_topics,
)
from torchkafka.worker.config import WorkerConfig

TopicsAction = Literal["plan", "apply", "create", "describe", "lag"]


def declared_topics(config: WorkerConfig) -> list[TopicSpec]:
    """The input, output and dead-letter topics as ``config`` declares them, then the retry
    tiers' topics (as many partitions as the input, configured as the dead-letter topic)."""
    topics = config.topics
    specs = worker_topics(
        config.input_topic,
        config.output_topic,
        config.dead_letter_topic,
        topics.partitions,
        topics.replication_factor,
        dead_letter_partitions=topics.dead_letter_partitions,
        configs=topics.configs(),
    )
    dead_letters = specs[2]
    retries = [
        replace(dead_letters, name=name, partitions=topics.partitions)
        for name, _ in config.retry_topics
    ]
    return [*specs, *retries]


def run_topics(
    action: TopicsAction,
    config: WorkerConfig,
    *,
    yes: bool = False,
    timeout_s: float = 30.0,
    out: TextIO | None = None,
) -> int:
    """Run ``action``, printing to ``out`` (stdout), each admin call waiting up to ``timeout_s``.

    The exit code: 0, or 1 when Kafka refused or did not answer, or ``apply`` lacks ``yes``.
    """
    out = out or sys.stdout
    connection = config.kafka.librdkafka()
    admin = admin_client(connection["bootstrap.servers"], connection)
    try:
        if action == "lag":
            print_lag(group_lag(admin, config.group_id, config.input_topic, timeout_s), out)
            return 0
        specs = declared_topics(config)
        observed = describe_topics(admin, [spec.name for spec in specs], timeout_s)
        if action == "describe":
            for spec in specs:
                print_state(spec.name, observed[spec.name], out)
            return 0
        plan = plan_topics(specs, observed)
        if action == "create":
            creates = Plan(tuple(c for c in plan.changes if c.action is Action.CREATE), ())
            apply_plan(admin, creates, timeout_s)
            created = {change.spec.name for change in creates.changes}
            for spec in specs:
                print(
                    f"{spec.name}: {_created(spec) if spec.name in created else 'exists'}", file=out
                )
            if specs[2].name in created and specs[2].partitions != config.topics.partitions:
                print(
                    f"the dead-letter topic has {_partitions(specs[2].partitions)}, not "
                    f"{config.topics.partitions}: it is dead_letter_partitions "
                    "(--dead-letter-partitions), --partitions is the other topics'",
                    file=out,
                )
            return 0
        print_plan(plan, out)
        if action == "plan" or plan.in_sync:
            return 0
        if not yes:
            print("nothing applied: run `topics apply --yes` to make these changes", file=out)
            return 1
        apply_plan(admin, plan, timeout_s)
        print("applied", file=out)
        return 0
    except TopologyError as exc:
        print(f"torchkafka topics {action}: {exc}", file=sys.stderr)
        return 1


def _created(spec: TopicSpec) -> str:
    return f"created, {_partitions(spec.partitions)}, replication factor {spec.replication_factor}"


def _partitions(count: int) -> str:
    return f"{count} partition{'' if count == 1 else 's'}"


def print_plan(plan: Plan, out: TextIO) -> None:
    """The changes, then what is left as it is."""
    for change in plan.changes:
        print(f"{change.action.value} {change.spec.name}: {change.detail}", file=out)
    for kept in plan.kept:
        print(f"left as it is: {kept}", file=out)
    if plan.in_sync:
        left = " (but for what is left as it is)" if plan.kept else ""
        print(f"nothing to change{left}", file=out)


def print_state(name: str, state: TopicState | None, out: TextIO) -> None:
    """A topic's partitions (leader, replicas, in-sync replicas) and the configs set on it."""
    if state is None:
        print(f"{name}: does not exist", file=out)
        return
    count = len(state.partitions)
    print(f"{name}: {count} partitions, replication factor {state.replication_factor}", file=out)
    for p in state.partitions:
        flag = "  under-replicated" if p.under_replicated else ""
        leader = p.leader if p.leader >= 0 else "none"
        print(
            f"  partition {p.partition}: leader {leader}, replicas {list(p.replicas)}, "
            f"in sync {list(p.isr)}{flag}",
            file=out,
        )
    configs = ", ".join(f"{key}={value}" for key, value in sorted(state.overrides.items()))
    print(f"  configs set on the topic: {configs or 'none'}", file=out)


def print_lag(lag: GroupLag, out: TextIO) -> None:
    """Per partition: committed offset, end offset, lag and holder; then the members."""
    members = len(lag.members)
    print(f"group {lag.group} on {lag.topic}: {lag.state}, {members} members", file=out)
    print(f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}  member", file=out)
    for p in lag.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        print(
            f"{p.partition:>9} {committed:>10} {p.end:>10} {p.lag:>8}  {p.owner or '-'}",
            file=out,
        )
    print(f"total lag: {lag.total}", file=out)
    for member in sorted(lag.members, key=lambda m: (m.client_id, m.member_id)):
        held = ", ".join(map(str, member.partitions)) or "none"
        instance = f", instance {member.instance_id}" if member.instance_id else ""
        print(
            f"member {member.client_id} ({member.host}{instance}): partitions {held}",
            file=out,
        )
    if lag.idle:
        print(
            f"{len(lag.idle)} of {members} members hold no partition: the topic has "
            f"{len(lag.partitions)} partitions, and a partition goes to one member of a group; "
            "add partitions (topics.partitions, then `topics apply`) to use more workers",
            file=out,
        )
