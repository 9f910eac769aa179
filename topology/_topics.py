"""Topics as values, and the admin calls that make the cluster match them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from torchkafka.topology._errors import TopologyError, admin_answer, answered
from torchkafka.topology._limits import SizeLimits

_DEFAULT_LIMITS = SizeLimits()


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as it should exist: partitions, replication and topic configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


#: The worker's topics by role, as topic configs name them (``ROLE:KEY=VALUE``).
ROLES = ("input", "output", "dead-letter")
_SIZE = "max.message.bytes"


def worker_topics(
    input_topic: str,
    output_topic: str,
    dead_letter_topic: str,
    partitions: int = 1,
    replication_factor: int = 1,
    limits: SizeLimits = _DEFAULT_LIMITS,
    *,
    dead_letter_partitions: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[TopicSpec]:
    """A worker's input, output and dead-letter topics, their size limits set by ``limits``.

    ``configs`` holds topic configs by role (``ROLES``). A declared
    ``max.message.bytes`` may raise a topic's limit, never lower it below what
    the worker sends or must read (``TopologyError``). The dead-letter topic
    has one partition unless said otherwise: dead letters are few, and read in order.
    """
    configs = configs or {}
    unknown = sorted(set(configs) - set(ROLES))
    if unknown:
        raise TopologyError(f"unknown topic roles {unknown}; the roles are {', '.join(ROLES)}")
    sizes = {
        "input": limits.input_record_bytes,
        "output": limits.output_record_bytes,
        "dead-letter": limits.output_record_bytes,
    }
    names = {"input": input_topic, "output": output_topic, "dead-letter": dead_letter_topic}
    counts = {"input": partitions, "output": partitions, "dead-letter": dead_letter_partitions}
    specs = []
    for role in ROLES:
        config = {_SIZE: str(sizes[role]), **configs.get(role, {})}
        declared = config[_SIZE]
        if not declared.isdigit() or int(declared) < sizes[role]:
            raise TopologyError(
                f"{_SIZE} of the {role} topic {names[role]!r} must be at least {sizes[role]} "
                f"(the worker's message limit, with room for keys and headers), got {declared!r}"
            )
        specs.append(TopicSpec(names[role], counts[role], replication_factor, config))
    return specs


def admin_client(bootstrap: str, extra: Mapping[str, str] | None = None) -> AdminClient:
    """An AdminClient for ``bootstrap``; ``extra`` passes librdkafka settings through."""
    return AdminClient({"bootstrap.servers": bootstrap, **(extra or {})})


def ensure_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Existing topics are left as they are (their partitions and configs are
    not compared yet). Returns once the broker's metadata lists every topic,
    so a worker started right after finds them.
    """
    if not specs:
        return []
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=dict(spec.config),
        )
        for spec in specs
    ]
    futures = admin.create_topics(
        new_topics, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    exists = KafkaError.TOPIC_ALREADY_EXISTS
    created = [
        name
        for name, future in futures.items()
        if answered(future, f"cannot create topic {name!r}", timeout_s, unless=exists)
    ]
    _wait_until_listed(admin, [spec.name for spec in specs], timeout_s)
    return created


def _wait_until_listed(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Block until the broker's metadata lists ``names`` (it can lag the create call)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with admin_answer("cannot list topics", timeout_s):
            listed = admin.list_topics(timeout=timeout_s).topics
        missing = set(names) - set(listed)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopologyError(f"topics {sorted(missing)} were created but are not listed")
        time.sleep(0.1)


def delete_topics(admin: AdminClient, names: Iterable[str], timeout_s: float = 30.0) -> None:
    """Delete topics; ones that do not exist are ignored."""
    names = list(names)
    if not names:
        return
    futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        missing = KafkaError.UNKNOWN_TOPIC_OR_PART
        answered(future, f"cannot delete topic {name!r}", timeout_s, unless=missing)
