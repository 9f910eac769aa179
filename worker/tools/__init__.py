"""Client-side commands (produce, consume, demo, bench): they talk to the worker through Kafka.

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

__all__ = [
    "ConsumeSettings",
    "DemoSettings",
    "ProduceSettings",
    "RequestFactory",
    "Sender",
    "print_report",
    "produce_requests",
    "run_bench",
    "run_consume",
    "run_demo",
    "run_produce",
]
