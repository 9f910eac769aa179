"""Client-side commands (topics, dlq, retries, produce, consume, demo, bench): Kafka only.

produce and consume are built on the client library (``torchkafka.client``).

Nothing in the worker imports this package (a test checks it).
"""

from torchkafka.worker.tools._bench import run_bench
from torchkafka.worker.tools._consume import ConsumeSettings, run_consume
from torchkafka.worker.tools._demo import DemoSettings, print_report, run_demo
from torchkafka.worker.tools._dlq import ReplayPlan, inspect_dead_letters, replay_dead_letters
from torchkafka.worker.tools._dlq_read import Selection, parse_time_ms
from torchkafka.worker.tools._produce import (
    ProduceSettings,
    RequestFactory,
    produce_requests,
    run_produce,
)
from torchkafka.worker.tools._retry_relay import RetryRelay, run_retries
from torchkafka.worker.tools._topics import (
    TopicsAction,
    declared_topics,
    run_topics,
)

__all__ = [
    "ConsumeSettings",
    "DemoSettings",
    "ProduceSettings",
    "ReplayPlan",
    "RequestFactory",
    "RetryRelay",
    "Selection",
    "TopicsAction",
    "declared_topics",
    "inspect_dead_letters",
    "parse_time_ms",
    "print_report",
    "produce_requests",
    "replay_dead_letters",
    "run_bench",
    "run_consume",
    "run_demo",
    "run_produce",
    "run_retries",
    "run_topics",
]
