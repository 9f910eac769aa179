"""Byte limits of a worker's topics and clients, all derived from its message limit.

A request value may be up to the worker's ``max_message_bytes``; its record adds
a key, headers and the batch's framing; its dead letter adds the ``torchkafka.*``
headers. Each limit below holds the one before it, so that every request the
worker accepts can be read in one fetch and dead-lettered with its value, and
every message it may publish is taken by the output and dead-letter topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchkafka.codecs import MAX_MESSAGE_BYTES

KiB = 1 << 10
#: Room beside the value in an input record: its key, headers and batch framing.
RECORD_ROOM = 64 * KiB
#: Room a dead letter needs beside its input record: eight ``torchkafka.*`` headers,
#: the error text being at most ``codecs.MAX_ERROR_BYTES`` (2 KiB).
DEAD_LETTER_ROOM = 4 * KiB
#: What a batch may add to the messages librdkafka's ``message.max.bytes`` admits.
BATCH_FRAMING = 1 * KiB
#: librdkafka's default ``batch.size``.
DEFAULT_BATCH_BYTES = 1_000_000
#: ``receive.message.max.bytes`` in input records. It also caps how far librdkafka
#: decompresses a zstd batch, and as it grows its buffer in steps (of up to 3x in the
#: versions measured), it may give up on a batch of a third of the cap: four records'
#: worth lets any batch of one record, and a bit more, through.
RESPONSE_RECORDS = 4


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """The limits that go with a worker limit of ``max_message_bytes`` a request value."""

    max_message_bytes: int = MAX_MESSAGE_BYTES

    @property
    def input_record_bytes(self) -> int:
        """The input topic's ``max.message.bytes``: a request at the limit, with its key and
        headers."""
        return self.max_message_bytes + RECORD_ROOM

    @property
    def producer_message_bytes(self) -> int:
        """The worker producer's ``message.max.bytes``: the dead letter of the largest input
        record, and so the largest result it publishes."""
        return self.input_record_bytes + DEAD_LETTER_ROOM

    @property
    def output_record_bytes(self) -> int:
        """The output and dead-letter topics' ``max.message.bytes``: what the producer sends."""
        return self.producer_message_bytes + BATCH_FRAMING

    def consumer(self) -> dict[str, str]:
        """The worker consumer's fetch limits (librdkafka settings).

        A partition's fetch asks for one input record of the largest size, a
        fetch for two. A response may be larger than a fetch (by framing, or a
        first batch larger than asked for); ``receive.message.max.bytes`` bounds
        it, and the size of a zstd batch decompressed (``RESPONSE_RECORDS``).
        """
        record = self.input_record_bytes
        return {
            "max.partition.fetch.bytes": str(record),
            "fetch.max.bytes": str(2 * record),
            "receive.message.max.bytes": str(RESPONSE_RECORDS * record),
        }

    def producer(self, topics_bytes: int | None = None) -> dict[str, str]:
        """The worker producer's size limits (librdkafka settings).

        ``topics_bytes``, the smallest ``max.message.bytes`` of the topics it
        writes to, caps its ``batch.size`` (less a batch's framing): librdkafka
        then never puts several messages in a batch the broker refuses whole,
        which would fail every message in it (and an exactly-once
        transaction); a message over the cap goes in a batch of its own.
        """
        settings = {"message.max.bytes": str(self.producer_message_bytes)}
        if topics_bytes is not None and topics_bytes - BATCH_FRAMING < DEFAULT_BATCH_BYTES:
            settings["batch.size"] = str(max(1, topics_bytes - BATCH_FRAMING))
        return settings
