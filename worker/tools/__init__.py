"""Client-side commands (topics, produce, consume, demo, bench): they reach workers via Kafka.

Nothing in the worker imports this package (a test checks it).
"""

from torchkafka.worker.tools._bench import run_bench
from torchkafka.worker.tools._consume import ConsumeSettings, run_consume
from torchkafka.worker.tools._demo import DemoSettings, print_report, run_demo
from torchkafka.worker.tools._produce import (
    ProduceSettings,
    RequestFactory,
    Sender,
    produce_requests,
    run_produce,
)
from torchkafka.worker.tools._topics import (
    TopicsAction,
    declared_topics,
    run_topics,
)

__all__ = [
    "ConsumeSettings",
    "DemoSettings",
    "ProduceSettings",
    "RequestFactory",
    "Sender",
    "TopicsAction",
    "declared_topics",
    "print_report",
    "produce_requests",
    "run_bench",
    "run_consume",
    "run_demo",
    "run_produce",
    "run_topics",
]
