"""Errors of the topology layer (Kafka admin)."""

from __future__ import annotations

from torchkafka.codecs import TorchKafkaError


class TopologyError(TorchKafkaError):
    """Kafka refused or failed an admin operation (create, delete, describe)."""
