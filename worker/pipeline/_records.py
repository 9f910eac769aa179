"""A consumed Kafka record, carried through the pipeline with its offsets."""

from __future__ import annotations

from dataclasses import dataclass

from torchkafka.codecs import Request
from torchkafka.worker.pipeline._images import ModelInput

#: (topic, partition): the unit of assignment, pausing and committing.
TopicPartitionKey = tuple[str, int]
#: (topic, partition, offset): where a record is.
Place = tuple[str, int, int]


@dataclass(slots=True)
class Record:
    """One input message: where it came from, its original bytes, and its request."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    #: None: the record has no value (a tombstone); its dead letter has none either.
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    received_s: float
    #: Why the headers could not be read (they are then empty): the record is dead-lettered.
    unreadable_headers: str | None = None
    #: Why the record could not be read at all (it then has no key, value or headers).
    unreadable: str | None = None

    @property
    def partition_key(self) -> TopicPartitionKey:
        """The (topic, partition) this record belongs to."""
        return (self.topic, self.partition)

    @property
    def place(self) -> Place:
        """The (topic, partition, offset) of this record."""
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A record whose request is valid, with the input the model will get."""

    record: Record
    request: Request
    input: ModelInput
