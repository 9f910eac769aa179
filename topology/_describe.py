"""What the cluster holds for a set of topics: partitions, replicas and configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigEntry, ConfigResource, ConfigSource
from confluent_kafka.admin._resource import ResourceType

from torchkafka.topology._errors import admin_answer


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition: its leader, replicas and in-sync replicas (broker ids; leader -1: none)."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        """Fewer replicas in sync than assigned."""
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the cluster has it."""

    name: str
    partitions: tuple[PartitionState, ...]
    #: Every config the broker reports for the topic, defaults included.
    configs: Mapping[str, str]
    #: The configs set on the topic itself (not broker or built-in defaults).
    overrides: Mapping[str, str]

    @property
    def replication_factor(self) -> int:
        """Replicas of the first partition (Kafka assigns every partition as many)."""
        return len(self.partitions[0].replicas) if self.partitions else 0


def describe_topics(
    admin: AdminClient, names: Sequence[str], timeout_s: float = 30.0
) -> dict[str, TopicState | None]:
    """Each of ``names`` as the cluster has it; None for a topic that does not exist."""
    if not names:
        return {}
    futures = admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout_s)
    found: dict[str, list[PartitionState]] = {}
    states: dict[str, TopicState | None] = {}
    for name, future in futures.items():
        with admin_answer(f"cannot describe topic {name!r}", timeout_s):
            try:
                description = future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                states[name] = None
                continue
        found[name] = [
            PartitionState(
                p.id,
                p.leader.id if p.leader is not None else -1,
                tuple(node.id for node in p.replicas),
                tuple(node.id for node in p.isr),
            )
            for p in description.partitions
        ]
    configs = _topic_configs(admin, list(found), timeout_s)
    for name, partitions in found.items():
        entries = configs[name]
        states[name] = TopicState(
            name,
            tuple(sorted(partitions, key=lambda p: p.partition)),
            {key: value for key, (value, _) in entries.items()},
            {key: value for key, (value, default) in entries.items() if not default},
        )
    return {name: states[name] for name in names}


_SET_ON_THE_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG


def _topic_configs(
    admin: AdminClient, names: list[str], timeout_s: float
) -> dict[str, dict[str, tuple[str, bool]]]:
    """Per topic, each config's value and whether it is a default (not set on the topic)."""
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    configs: dict[str, dict[str, tuple[str, bool]]] = {}
    for resource, future in futures.items():
        with admin_answer(f"cannot read the configs of {resource.name!r}", timeout_s):
            entries: dict[str, ConfigEntry] = future.result(timeout=timeout_s)
        configs[resource.name] = {
            # ``source`` comes as the ConfigSource's int value (typed as the enum)
            key: (entry.value or "", ConfigSource(entry.source) is not _SET_ON_THE_TOPIC)
            for key, entry in entries.items()
        }
    return configs
