"""The worker's configuration: frozen sections, loaded from a file, the environment and flags.

Cheap to import (no torch, no Kafka client): the CLI and the model layer use it.
"""

from torchkafka.worker.config._dead_letters import DeadLetterSettings
from torchkafka.worker.config._loading import (
    SECRET_FILES,
    SETTINGS,
    Setting,
    build_config,
    load_config,
    load_connection,
)
from torchkafka.worker.config._secret import Secret, mask_url
from torchkafka.worker.config._sections import (
    Backend,
    BatchingSettings,
    DedupSettings,
    KafkaConnection,
    ModelSettings,
    OperationsSettings,
    Precision,
    RedisOutage,
    RedisStateLoss,
    Timeouts,
    WorkerConfig,
    group_membership,
)

__all__ = [
    "SECRET_FILES",
    "SETTINGS",
    "Backend",
    "BatchingSettings",
    "DeadLetterSettings",
    "DedupSettings",
    "KafkaConnection",
    "ModelSettings",
    "OperationsSettings",
    "Precision",
    "RedisOutage",
    "RedisStateLoss",
    "Secret",
    "Setting",
    "Timeouts",
    "WorkerConfig",
    "build_config",
    "group_membership",
    "load_config",
    "load_connection",
    "mask_url",
]
