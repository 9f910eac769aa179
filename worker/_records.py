"""A consumed Kafka record, carried through the pipeline with its offsets."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from torchkafka.codecs import Request
from torchkafka.worker._images import ModelInput

#: (topic, partition): the unit of assignment, pausing and committing.
TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class Record:
    """One input message: where it came from, its original bytes, and its request."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    received_s: float

    @property
    def partition_key(self) -> TopicPartitionKey:
        """The (topic, partition) this record belongs to."""
        return (self.topic, self.partition)

    @classmethod
    def from_message(cls, message: Message, received_s: float) -> Record:
        """Copy what the pipeline needs out of a confluent-kafka message."""
        headers = message.headers()
        topic = message.topic()
        partition = message.partition()
        offset = message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a consumed message must have a topic, partition and offset")
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.key(),
            value=message.value() or b"",
            headers=list(headers.items()) if isinstance(headers, dict) else list(headers or []),
            received_s=received_s,
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A record whose request is valid, with the input the model will get."""

    record: Record
    request: Request
    input: ModelInput
