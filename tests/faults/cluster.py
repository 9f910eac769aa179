"""The 3-node cluster of deploy/local/kafka.sh: topics on it, crashing a node, and the
group's committed offsets as Kafka's own consumer-groups tool reports them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

# The admin package re-exports these without __all__ listing them (mypy strict).
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tests.integration.helpers import DEPLOY, run_cli

PORT_BASE = int(os.environ.get("KAFKA_CLUSTER_PORT_BASE", "9192"))
BOOTSTRAP = ",".join(f"127.0.0.1:{PORT_BASE + node}" for node in range(3))
PARTITIONS = 6
REPLICATION = 3
MIN_ISR = 2


def kafka_sh(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """``deploy/local/kafka.sh ARGS``, its output kept."""
    return subprocess.run(
        [str(DEPLOY / "kafka.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def checked_kafka_sh(*args: str) -> str:
    done = kafka_sh(*args)
    assert done.returncode == 0, f"kafka.sh {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def cluster_answers() -> bool:
    return kafka_sh("status", "cluster").returncode == 0


def crash_node(node: int) -> None:
    """SIGKILL cluster node ``node`` (1-3)."""
    checked_kafka_sh("kill", "cluster", str(node))


def restart_crashed() -> None:
    """Start the nodes that are not running; returns once all three answer."""
    checked_kafka_sh("start", "cluster")


@dataclass(frozen=True)
class FaultTopics:
    input: str
    output: str
    dead_letters: str

    @property
    def names(self) -> list[str]:
        return [self.input, self.output, self.dead_letters]


def create_topics(admin: AdminClient, prefix: str) -> FaultTopics:
    """Input and output (6 partitions) and dead-letter topics, RF 3 and min ISR 2.

    Made by ``torchkafka topics apply`` from the declaration, then read back.
    """
    topics = FaultTopics(f"{prefix}-in", f"{prefix}-out", f"{prefix}-dlq")
    done = run_cli(
        "topics", "apply", "--yes", "--bootstrap", BOOTSTRAP,
        "--input-topic", topics.input, "--output-topic", topics.output,
        "--dead-letter-topic", topics.dead_letters,
        "--partitions", str(PARTITIONS), "--replication-factor", str(REPLICATION),
        "--topic-config", f"min.insync.replicas={MIN_ISR}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    check_topics(admin, topics.names)
    return topics


def check_topics(admin: AdminClient, names: list[str]) -> None:
    """Every topic has ``MIN_ISR`` and ``REPLICATION`` replicas per partition."""
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    for resource, future in described.items():
        isr = future.result(timeout=30)["min.insync.replicas"].value
        assert isr == str(MIN_ISR), f"{resource.name}: min.insync.replicas {isr}"
    metadata = admin.list_topics(timeout=30)
    for name in names:
        replicas = {len(p.replicas) for p in metadata.topics[name].partitions.values()}
        assert replicas == {REPLICATION}, f"{name}: replicas per partition {replicas}"


def committed_and_end(group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """Per partition of ``topic``: ``group``'s committed offset (None: none) and the log end.

    From ``kafka-consumer-groups --describe`` (``kafka.sh consumer-groups``);
    a group that is rebalancing lists no partitions.
    """
    output = checked_kafka_sh(
        "consumer-groups", "--bootstrap-server", BOOTSTRAP, "--describe", "--group", group
    )
    rows: dict[int, tuple[int | None, int]] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == group and fields[1] == topic:
            current, end = fields[3], fields[4]
            rows[int(fields[2])] = (None if current == "-" else int(current), int(end))
    return rows


def tool_says_committed_at_end(group: str, topic: str) -> bool:
    """Whether the consumer-groups tool shows every partition committed at its end."""
    rows = committed_and_end(group, topic)
    return len(rows) == PARTITIONS and all(
        current == end or (current is None and end == 0) for current, end in rows.values()
    )
