"""A consumer group's progress on a topic: committed offsets, end offsets, lag, and members."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._group import ConsumerGroupDescription
from confluent_kafka.admin._listoffsets import OffsetSpec

from torchkafka.topology._errors import TopologyError, admin_answer, admin_error


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition: where the group's commit stands against the end of the log."""

    partition: int
    committed: int | None  # None: the group has committed nothing here
    start: int  # the log's first offset (records before it were deleted)
    end: int
    owner: str | None  # the member that holds it, if any

    @property
    def lag(self) -> int:
        """Records after the commit (every record in the log where nothing is committed)."""
        return self.end - max(self.start, self.committed or 0)


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the group and the partitions of the topic it holds."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GroupLag:
    """The group's lag on one topic, partition by partition, and who holds what."""

    group: str
    topic: str
    state: str
    partitions: tuple[PartitionLag, ...]
    members: tuple[Member, ...]

    @property
    def total(self) -> int:
        """The lag summed over the partitions."""
        return sum(p.lag for p in self.partitions)

    @property
    def idle(self) -> tuple[Member, ...]:
        """Members that hold no partition of the topic (more members than partitions)."""
        return tuple(m for m in self.members if not m.partitions)


def group_lag(admin: AdminClient, group: str, topic: str, timeout_s: float = 30.0) -> GroupLag:
    """``group``'s lag on ``topic``; ``TopologyError`` if the topic does not exist."""
    with admin_answer(f"cannot read the metadata of {topic!r}", timeout_s):
        metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    error = None if metadata is None else metadata.error
    if metadata is None or (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        raise TopologyError(f"topic {topic!r} does not exist")
    if error is not None:
        raise admin_error(f"cannot read topic {topic!r}", KafkaException(error))
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout_s)  # type: ignore[no-untyped-call]
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout_s)  # type: ignore[no-untyped-call]
    committed = _committed(admin, group, partitions, timeout_s)
    description = _describe_group(admin, group, timeout_s)
    members = tuple(
        Member(
            m.member_id,
            m.client_id,
            m.host,
            m.group_instance_id,
            tuple(
                sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
            ),
        )
        for m in description.members
    )
    owners = {p: m.client_id or m.member_id for m in members for p in m.partitions}
    return GroupLag(
        group,
        topic,
        description.state.name.lower(),
        tuple(
            PartitionLag(
                tp.partition,
                committed.get(tp.partition),
                starts[tp.partition],
                ends[tp.partition],
                owners.get(tp.partition),
            )
            for tp in partitions
        ),
        members,
    )


def _offsets(
    admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec, timeout_s: float
) -> dict[int, int]:
    """Each partition's offset that ``spec`` names (its first, or its end)."""
    futures = admin.list_offsets(dict.fromkeys(partitions, spec), request_timeout=timeout_s)
    ends: dict[int, int] = {}
    for tp, future in futures.items():
        with admin_answer(f"cannot read the offsets of {tp.topic}[{tp.partition}]", timeout_s):
            ends[tp.partition] = future.result(timeout=timeout_s).offset
    return ends


def _committed(
    admin: AdminClient, group: str, partitions: list[TopicPartition], timeout_s: float
) -> dict[int, int]:
    """The group's committed offsets on ``partitions`` (those it committed at all)."""
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    future = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group]
    with admin_answer(f"cannot read the offsets of group {group!r}", timeout_s):
        result = future.result(timeout=timeout_s)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _describe_group(admin: AdminClient, group: str, timeout_s: float) -> ConsumerGroupDescription:
    future = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
    with admin_answer(f"cannot describe group {group!r}", timeout_s):
        description: ConsumerGroupDescription = future.result(timeout=timeout_s)
    return description
