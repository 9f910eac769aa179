"""The steps between a consumed record and its result: no Kafka client in here.

admission (decode, dedup gate) -> batcher -> inference thread -> ``Publisher``;
what the broker acknowledged is settled (done-marks, then commit offsets).
Dedup and its retries live here too; so do image decoding, the dead-letter guard, the
crash-loop guard and the retry tiers.
"""

from torchkafka.worker.pipeline._admission import Admission, Gate
from torchkafka.worker.pipeline._backpressure import Backpressure, PauseReason, intake_limit
from torchkafka.worker.pipeline._batch_sizer import BatchSizer, ladder
from torchkafka.worker.pipeline._batcher import Batch, BatchItem, MicroBatcher, StagingPool
from torchkafka.worker.pipeline._crash_guard import CrashGuard, RunLog
from torchkafka.worker.pipeline._dead_letter_guard import DeadLetterGuard, GuardedPublisher
from torchkafka.worker.pipeline._dedup import Claims, Dedup, DedupStore
from torchkafka.worker.pipeline._deliveries import (
    Delivery,
    Outbox,
    Outcome,
    Publisher,
    ResultMessage,
    result_ids,
)
from torchkafka.worker.pipeline._device_jpeg import DeviceJpeg
from torchkafka.worker.pipeline._done_marks import DoneMarks
from torchkafka.worker.pipeline._handoff import Handoff
from torchkafka.worker.pipeline._images import (
    DecodingImage,
    ImageDecoder,
    ModelInput,
    batch_tensor,
    decode_threads,
)
from torchkafka.worker.pipeline._inference import InferenceWorker
from torchkafka.worker.pipeline._input_spec import InputSpec
from torchkafka.worker.pipeline._no_dedup import NoDedup
from torchkafka.worker.pipeline._offsets import OffsetTracker
from torchkafka.worker.pipeline._parking import Parking
from torchkafka.worker.pipeline._records import Admitted, Place, Record, TopicPartitionKey
from torchkafka.worker.pipeline._retry import RetrySettings
from torchkafka.worker.pipeline._retry_tiers import RetryTiers, attempts_before
from torchkafka.worker.pipeline._settlement import Settlement

__all__ = [
    "Admission",
    "Admitted",
    "Backpressure",
    "Batch",
    "BatchItem",
    "BatchSizer",
    "Claims",
    "CrashGuard",
    "DeadLetterGuard",
    "DecodingImage",
    "Dedup",
    "DedupStore",
    "Delivery",
    "DeviceJpeg",
    "DoneMarks",
    "Gate",
    "GuardedPublisher",
    "Handoff",
    "ImageDecoder",
    "InferenceWorker",
    "InputSpec",
    "MicroBatcher",
    "ModelInput",
    "NoDedup",
    "OffsetTracker",
    "Outbox",
    "Outcome",
    "Parking",
    "PauseReason",
    "Place",
    "Publisher",
    "Record",
    "ResultMessage",
    "RetrySettings",
    "RetryTiers",
    "RunLog",
    "Settlement",
    "StagingPool",
    "TopicPartitionKey",
    "attempts_before",
    "batch_tensor",
    "decode_threads",
    "intake_limit",
    "ladder",
    "result_ids",
]
