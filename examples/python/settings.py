"""Where the examples send: the broker, the pipeline's topics and the input's shape.

Each setting is a flag, or an environment variable (the HTTP gateway has no
flags), or else the names docs/topics.md uses (requests, results, requests.dlq).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from torchkafka.worker.config import KafkaConnection


@dataclass(frozen=True)
class Pipeline:
    """A torchkafka pipeline: how to reach it, and what its model takes."""

    connection: KafkaConnection
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    def random_input(self) -> torch.Tensor:
        """An input the model takes: random values of its shape and dtype."""
        if self.dtype.is_floating_point:
            return torch.rand(self.shape).to(self.dtype)
        return torch.randint(0, 256, self.shape).to(self.dtype)


def from_environment() -> Pipeline:
    """KAFKA_BOOTSTRAP, TORCHKAFKA_INPUT_TOPIC, TORCHKAFKA_OUTPUT_TOPIC,
    TORCHKAFKA_DEAD_LETTER_TOPIC, TORCHKAFKA_SHAPE (e.g. ``3,224,224``) and
    TORCHKAFKA_DTYPE (the worker's ``input_dtype``: ``float32``, or ``uint8``
    for an imagenet-preprocessed model)."""
    return Pipeline(
        KafkaConnection(bootstrap=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")),
        os.environ.get("TORCHKAFKA_INPUT_TOPIC", "requests"),
        os.environ.get("TORCHKAFKA_OUTPUT_TOPIC", "results"),
        os.environ.get("TORCHKAFKA_DEAD_LETTER_TOPIC", "requests.dlq"),
        _shape(os.environ.get("TORCHKAFKA_SHAPE", "3,224,224")),
        _dtype(os.environ.get("TORCHKAFKA_DTYPE", "float32")),
    )


def from_arguments(description: str) -> tuple[Pipeline, int]:
    """The pipeline from flags (defaults from the environment), and ``--count``."""
    defaults = from_environment()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", default=defaults.connection.bootstrap)
    parser.add_argument("--input-topic", default=defaults.input_topic)
    parser.add_argument("--output-topic", default=defaults.output_topic)
    parser.add_argument("--dead-letter-topic", default=defaults.dead_letter_topic)
    parser.add_argument(
        "--shape", type=_shape, default=defaults.shape, help="the input tensor's shape: 3,224,224"
    )
    parser.add_argument(
        "--dtype", type=_dtype, default=defaults.dtype, help="the input's dtype: float32, uint8"
    )
    parser.add_argument("--count", type=int, default=5, help="how many requests to send")
    args = parser.parse_args()
    pipeline = Pipeline(
        KafkaConnection(bootstrap=args.bootstrap),
        args.input_topic,
        args.output_topic,
        args.dead_letter_topic,
        args.shape,
        args.dtype,
    )
    return pipeline, args.count


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(size) for size in text.split(","))


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return dtype
