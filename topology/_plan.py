"""From declared topics to the changes that make the cluster match them, and applying them.

A plan creates missing topics, adds partitions up to the declared count and
sets declared configs whose values differ. It never deletes a topic, removes
partitions (Kafka cannot), changes a replication factor (a reassignment, not
a config) or unsets a config set on a topic but not declared: those
differences are listed as kept, so that nothing changes silently.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewPartitions

from torchkafka.topology._describe import TopicState
from torchkafka.topology._errors import admin_answer
from torchkafka.topology._topics import TopicSpec, ensure_topics


class Action(enum.Enum):
    """What a change does."""

    CREATE = "create"
    ADD_PARTITIONS = "add partitions"
    SET_CONFIGS = "set configs"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one topic, and what it is in words."""

    action: Action
    spec: TopicSpec
    detail: str
    #: For ``SET_CONFIGS``: the declared values that differ.
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes to make, and the differences left as they are (with why)."""

    changes: tuple[Change, ...]
    kept: tuple[str, ...]

    @property
    def in_sync(self) -> bool:
        """Nothing to change."""
        return not self.changes


def plan_topics(specs: Sequence[TopicSpec], observed: Mapping[str, TopicState | None]) -> Plan:
    """The changes that make the topics of ``observed`` (by name) match ``specs``."""
    changes: list[Change] = []
    kept: list[str] = []
    for spec in specs:
        state = observed.get(spec.name)
        if state is None:
            detail = f"partitions {spec.partitions}, replication factor {spec.replication_factor}"
            changes.append(Change(Action.CREATE, spec, _with_configs(detail, spec.config)))
            continue
        have = len(state.partitions)
        if spec.partitions > have:
            detail = f"{have} -> {spec.partitions} partitions (keys map to new partitions)"
            changes.append(Change(Action.ADD_PARTITIONS, spec, detail))
        elif spec.partitions < have:
            kept.append(
                f"{spec.name}: {have} partitions, {spec.partitions} declared "
                "(Kafka cannot remove partitions)"
            )
        if spec.replication_factor != state.replication_factor:
            kept.append(
                f"{spec.name}: replication factor {state.replication_factor}, "
                f"{spec.replication_factor} declared (a partition reassignment changes it, "
                "not this command)"
            )
        differ = {
            key: value for key, value in spec.config.items() if state.configs.get(key) != value
        }
        if differ:
            detail = ", ".join(
                f"{key}: {state.configs.get(key, '(unset)')} -> {value}"
                for key, value in sorted(differ.items())
            )
            changes.append(Change(Action.SET_CONFIGS, spec, detail, differ))
        extra = sorted(set(state.overrides) - set(spec.config))
        if extra:
            kept.append(f"{spec.name}: set on the topic, not declared: {', '.join(extra)}")
    return Plan(tuple(changes), tuple(kept))


def apply_plan(admin: AdminClient, plan: Plan, timeout_s: float = 30.0) -> None:
    """Make ``plan``'s changes: create, then add partitions, then set configs."""
    by_action = {action: [c for c in plan.changes if c.action is action] for action in Action}
    ensure_topics(admin, [change.spec for change in by_action[Action.CREATE]], timeout_s)
    _add_partitions(admin, by_action[Action.ADD_PARTITIONS], timeout_s)
    _set_configs(admin, by_action[Action.SET_CONFIGS], timeout_s)


def _add_partitions(admin: AdminClient, changes: list[Change], timeout_s: float) -> None:
    if not changes:
        return
    grown = [NewPartitions(change.spec.name, change.spec.partitions) for change in changes]
    futures = admin.create_partitions(grown, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        with admin_answer(f"cannot add partitions to {name!r}", timeout_s):
            future.result(timeout=timeout_s)


def _set_configs(admin: AdminClient, changes: list[Change], timeout_s: float) -> None:
    if not changes:
        return
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            change.spec.name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in change.configs.items()
            ],
        )
        for change in changes
    ]
    futures = admin.incremental_alter_configs(resources, request_timeout=timeout_s)
    for resource, future in futures.items():
        with admin_answer(f"cannot set the configs of {resource.name!r}", timeout_s):
            future.result(timeout=timeout_s)


def _with_configs(detail: str, configs: Mapping[str, str]) -> str:
    if not configs:
        return detail
    return detail + "; " + ", ".join(f"{key}={value}" for key, value in sorted(configs.items()))
