"""An in-memory consumer (and transactional producer) for unit tests of the polling loop.

``FakeConsumer`` keeps partitions of records, an assignment, paused partitions
and a log of commits. Rebalances are scheduled with ``rebalance`` and run from
inside the next ``consume`` call, on the caller's thread, as librdkafka runs
its callbacks. Commits can be made to fail, as a broker does in a rebalance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

Callback = Callable[[object, list[TopicPartition]], None]
Key = tuple[str, int]


@dataclass(frozen=True)
class FakeMessage:
    """The parts of ``confluent_kafka.Message`` that the worker reads."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list[tuple[str, bytes | None]] | None = None
    _error: KafkaError | None = None
    _headers_error: Exception | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        if self._headers_error is not None:
            raise self._headers_error
        return self._headers

    def error(self) -> KafkaError | None:
        return self._error


@dataclass
class Commit:
    """One ``commit`` call: offsets by partition, and whether it was asynchronous."""

    offsets: dict[Key, int]
    asynchronous: bool


@dataclass
class FakeConsumer:
    """A consumer over in-memory partitions; see the module docstring."""

    log: list[Commit] = field(default_factory=list)
    paused: set[Key] = field(default_factory=set)
    assignment: set[Key] = field(default_factory=set)
    closed: bool = False
    #: Errors that the next commits raise, one per call (sync) or report to ``on_commit``
    #: from the next ``consume`` (async), as librdkafka does.
    commit_errors: list[KafkaError] = field(default_factory=list)
    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = None
    #: What ``close`` raises, if anything (a broker mid-rebalance refusing the leave).
    close_error: KafkaError | None = None
    #: Messages (errors included) that the next ``consume`` returns before any record.
    events: list[FakeMessage] = field(default_factory=list)
    _records: dict[Key, list[FakeMessage]] = field(default_factory=dict)
    _position: dict[Key, int] = field(default_factory=dict)
    _callbacks: dict[str, Callback] = field(default_factory=dict)
    _rebalances: list[tuple[str, list[Key]]] = field(default_factory=list)
    _reports: list[tuple[KafkaError, list[TopicPartition]]] = field(default_factory=list)

    def add(
        self,
        topic: str,
        partition: int,
        values: Iterable[bytes | None],
        headers_error: Exception | None = None,
    ) -> None:
        """Append records with ``values`` to a partition (created on first use).

        ``headers_error``: what reading each record's headers raises.
        """
        records = self._records.setdefault((topic, partition), [])
        for value in values:
            offset = len(records)
            records.append(
                FakeMessage(topic, partition, offset, value, b"k", _headers_error=headers_error)
            )

    def add_unreadable(self, topic: str, partition: int, count: int) -> None:
        """Append a batch of ``count`` records that cannot be read: as librdkafka does, each
        consume from inside it reports (twice) an error at its first offset instead."""
        records = self._records.setdefault((topic, partition), [])
        error = KafkaError(KafkaError._BAD_COMPRESSION, "Decompression failed")
        report = FakeMessage(topic, partition, len(records), None, _error=error)
        records.extend([report] * count)

    def seek(self, partition: TopicPartition) -> None:
        assert partition.offset >= 0 or partition.offset == OFFSET_BEGINNING, partition
        self._position[(partition.topic, partition.partition)] = max(0, partition.offset)

    def rebalance(self, kind: str, keys: Iterable[Key]) -> None:
        """Run ``on_assign``, ``on_revoke`` or ``on_lost`` for ``keys`` in the next consume."""
        assert kind in {"assign", "revoke", "lost"}, kind
        self._rebalances.append((kind, list(keys)))

    def committed_offsets(self) -> dict[Key, int]:
        """The last committed offset of each partition, by the commit log."""
        latest: dict[Key, int] = {}
        for commit in self.log:
            latest.update(commit.offsets)
        return latest

    # The confluent_kafka.Consumer methods the loop calls.

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callback,
        on_revoke: Callback,
        on_lost: Callback,
    ) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        return self._take(num_messages)

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        taken = self._take(1)
        return taken[0] if taken else None

    def _take(self, num_messages: int) -> list[FakeMessage]:
        """What consume() or poll() gets: callbacks served, then up to ``num_messages``."""
        assert not self.closed, "consume after close"
        reports, self._reports = self._reports, []
        for error, partitions in reports:
            assert self.on_commit is not None, "an asynchronous commit was refused unobserved"
            self.on_commit(error, partitions)
        while self._rebalances:
            kind, keys = self._rebalances.pop(0)
            partitions = [TopicPartition(t, p) for t, p in keys]
            self._callbacks[kind](self, partitions)
            if kind == "assign" and not set(keys) <= self.assignment:
                self.assignment |= set(keys)  # assigned after the callback, unless it did
            elif kind != "assign":
                self.assignment -= set(keys)
                self.paused -= set(keys)
        out, self.events = self.events[:num_messages], self.events[num_messages:]
        for key in sorted(self.assignment - self.paused):
            records = self._records.get(key, [])
            position = self._position.get(key, self._committed_or_zero(key))
            take = records[position : position + num_messages - len(out)]
            unreadable = next((i for i, m in enumerate(take) if m.error() is not None), None)
            if unreadable is not None:  # the records before it, then its report, twice
                take = take[:unreadable] + [take[unreadable]] * 2
                unreadable_reports = 2
            else:
                unreadable_reports = 0
            out += take
            self._position[key] = position + len(take) - unreadable_reports
        return out

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> list[TopicPartition] | None:
        assert offsets is not None, "the worker commits explicit offsets"
        if self.commit_errors:
            error = self.commit_errors.pop(0)
            if asynchronous:
                self._reports.append((error, offsets))
                return None
            raise KafkaException(error)
        self.log.append(
            Commit({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous)
        )
        return None if asynchronous else offsets

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        latest = self.committed_offsets()
        return [
            TopicPartition(tp.topic, tp.partition, latest.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assignment |= {(tp.topic, tp.partition) for tp in partitions}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assignment = {(tp.topic, tp.partition) for tp in partitions}

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._position.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self._records.get((partition.topic, partition.partition), []))

    def close(self) -> None:
        """Leave the group: the assignment is revoked first, through ``on_revoke``."""
        if self.assignment and self._callbacks:
            self._callbacks["revoke"](
                self, [TopicPartition(t, p) for t, p in sorted(self.assignment)]
            )
        self.assignment = set()
        self.closed = True
        if self.close_error is not None:
            raise KafkaException(self.close_error)

    def _committed_or_zero(self, key: Key) -> int:
        return self.committed_offsets().get(key, 0)


@dataclass
class FakeTransactionalProducer:
    """A transactional producer whose transactions commit into ``consumer``'s group.

    A committed transaction appends its messages to ``topics`` (what a
    read_committed reader sees) and its offsets to the consumer's commit log.
    """

    consumer: FakeConsumer
    #: Committed messages' values, per topic.
    topics: dict[str, list[bytes | None]] = field(default_factory=dict)
    #: Errors that the next ``commit_transaction`` calls raise, one per call.
    commit_errors: list[KafkaError] = field(default_factory=list)
    #: Errors that the next produced messages' deliveries report, one per message.
    delivery_errors: list[KafkaError] = field(default_factory=list)
    in_transaction: bool = False
    aborted: int = 0
    _open: list[tuple[str, bytes | None]] = field(default_factory=list)
    _offsets: dict[Key, int] = field(default_factory=dict)
    _reports: list[tuple[Callable[[KafkaError | None, object], None], KafkaError | None]] = field(
        default_factory=list
    )

    @property
    def open_messages(self) -> int:
        """Messages produced in the open transaction."""
        return len(self._open)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, object], None] | None = None,
    ) -> None:
        assert self.in_transaction, "produce outside a transaction"
        assert on_delivery is not None
        self._open.append((topic, value))
        error = self.delivery_errors.pop(0) if self.delivery_errors else None
        self._reports.append((on_delivery, error))

    def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
        for message in messages:
            self.produce(topic, message["value"], message["key"], None, message["callback"])
        return len(messages)

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for on_delivery, error in reports:
            on_delivery(error, None)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def begin_transaction(self) -> None:
        assert not self.in_transaction, "a transaction is open already"
        self.in_transaction = True

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], metadata: object, timeout: float = -1
    ) -> None:
        assert self.in_transaction
        self._offsets.update({(tp.topic, tp.partition): tp.offset for tp in positions})

    def commit_transaction(self, timeout: float = -1) -> None:
        assert self.in_transaction
        if self.commit_errors:
            raise KafkaException(self.commit_errors.pop(0))
        for topic, value in self._open:
            self.topics.setdefault(topic, []).append(value)
        if self._offsets:
            self.consumer.log.append(Commit(dict(self._offsets), asynchronous=False))
        self._end()

    def abort_transaction(self, timeout: float = -1) -> None:
        """Abort: messages not yet reported are purged, as librdkafka reports them."""
        self.aborted += 1
        purged = KafkaError(KafkaError._PURGE_QUEUE)
        self._reports = [(on_delivery, purged) for on_delivery, _ in self._reports]
        self._end()

    def _end(self) -> None:
        self._open, self._offsets = [], {}
        self.in_transaction = False
