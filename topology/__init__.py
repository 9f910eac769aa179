"""What flows where: topics as declarative values and the Kafka admin calls.

No torch here: topology must be importable by tools that never run a model.
"""

from torchkafka.topology._describe import PartitionState, TopicState, describe_topics
from torchkafka.topology._errors import TopologyError
from torchkafka.topology._lag import GroupLag, Member, PartitionLag, group_lag
from torchkafka.topology._limits import SizeLimits
from torchkafka.topology._plan import Action, Change, Plan, apply_plan, plan_topics
from torchkafka.topology._topics import (
    ROLES,
    TopicSpec,
    admin_client,
    delete_topics,
    ensure_topics,
    worker_topics,
)

__all__ = [
    "ROLES",
    "Action",
    "Change",
    "GroupLag",
    "Member",
    "PartitionLag",
    "PartitionState",
    "Plan",
    "SizeLimits",
    "TopicSpec",
    "TopicState",
    "TopologyError",
    "admin_client",
    "apply_plan",
    "delete_topics",
    "describe_topics",
    "ensure_topics",
    "group_lag",
    "plan_topics",
    "worker_topics",
]
