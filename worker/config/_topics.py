"""The pipeline's topics as declared in the worker's config: what `topics plan|apply` makes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torchkafka.worker._errors import StartupError
from torchkafka.worker.config._fields import positive, setting

#: The roles a topic config may name (``ROLE:KEY=VALUE``), as ``topology.ROLES`` has them.
TOPIC_ROLES = ("input", "output", "dead-letter")


@dataclass(frozen=True, slots=True)
class TopicsSettings:
    """Partitions, replication and configs of the input, output and dead-letter topics."""

    partitions: int = setting(
        "partitions of the input and output topics (and of retry tiers' topics), not of the "
        "dead-letter topic: `topics apply` creates them so and adds partitions up to it, never "
        "removes any; at most this many workers of a group are busy",
        4,
    )
    dead_letter_partitions: int = setting(
        "partitions of the dead-letter topic, whatever --partitions says: dead letters are "
        "few, and one partition keeps them in one order for `torchkafka dlq`",
        1,
    )
    replication_factor: int = setting(
        "replicas of every partition of the three topics (set when a topic is created)", 1
    )
    topic: Mapping[str, str] = setting(
        "topic configs (KEY=VALUE) for all three topics, e.g. min.insync.replicas=2; "
        "ROLE:KEY=VALUE for one (ROLE: input, output or dead-letter); max.message.bytes is "
        "set from the worker's message limit unless raised here",
        factory=dict,
    )

    def __post_init__(self) -> None:
        positive(self, "partitions", "dead_letter_partitions", "replication_factor")
        for key in self.topic:
            role, _, name = key.rpartition(":")
            if (role and role not in TOPIC_ROLES) or not name:
                raise StartupError(
                    f"topic config {key!r}: expected KEY or ROLE:KEY, ROLE one of "
                    f"{', '.join(TOPIC_ROLES)}"
                )

    def configs(self) -> dict[str, dict[str, str]]:
        """The declared configs by role: those for all three, then each role's own."""
        shared = {key: value for key, value in self.topic.items() if ":" not in key}
        by_role = {role: dict(shared) for role in TOPIC_ROLES}
        for key, value in self.topic.items():
            role, _, name = key.rpartition(":")
            if role:
                by_role[role][name] = value
        return by_role
