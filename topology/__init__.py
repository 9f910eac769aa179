"""What flows where: topics as declarative values and the Kafka admin calls.

No torch here: topology must be importable by tools that never run a model.
"""

from torchkafka.topology._errors import TopologyError
from torchkafka.topology._limits import SizeLimits
from torchkafka.topology._topics import (
    TopicSpec,
    admin_client,
    delete_topics,
    ensure_topics,
    worker_topics,
)

__all__ = [
    "SizeLimits",
    "TopicSpec",
    "TopologyError",
    "admin_client",
    "delete_topics",
    "ensure_topics",
    "worker_topics",
]
