"""The worker's settings: one frozen value in sections, each field with its help text.

Every field has a name that is unique across sections (its ``--flag``, its
``TORCHKAFKA_<NAME>`` variable and its key in a config file), so settings
stay flat to type and nested to read: ``--max-wait-ms`` is
``config.batching.max_wait_ms``. Secrets have no flag: they come from the
environment, the config file, or a file named by ``<name>_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from torchkafka.worker._env import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_REDIS_URL
from torchkafka.worker._errors import StartupError
from torchkafka.worker.config._dead_letters import DeadLetterSettings
from torchkafka.worker.config._fields import not_negative, positive, secret, section, setting
from torchkafka.worker.config._secret import Secret, mask_url
from torchkafka.worker.config._topics import TopicsSettings

RedisOutage = Literal["pause", "fail-open"]
#: ``redis``: done-marks and claims in Redis; ``off``: no dedup, no Redis.
DedupMode = Literal["redis", "off"]
#: What a worker does when Redis has lost its done-marks (restarted empty, flushed).
RedisStateLoss = Literal["pause", "continue"]
#: The consumer group protocol: the classic one, or KIP-848's (Kafka 4.0 and later).
GroupProtocol = Literal["classic", "consumer"]
#: What a worker promises about results: at least one per input, or exactly one (transactions).
Guarantee = Literal["at-least-once", "exactly-once"]
BatchSizing = Literal["adaptive", "fixed"]
Backend = Literal["eager", "torchscript", "compile", "tensorrt", "int8"]
Precision = Literal["fp32", "fp16", "bf16"]
SecurityProtocol = Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How every client reaches the cluster: consumer, producer, admin and the tools."""

    bootstrap: str = setting(
        "Kafka bootstrap servers (also env KAFKA_BOOTSTRAP)", DEFAULT_KAFKA_BOOTSTRAP
    )
    security_protocol: SecurityProtocol = setting(
        "plaintext, ssl, sasl_plaintext or sasl_ssl", "plaintext"
    )
    sasl_mechanism: SaslMechanism = setting(
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", "SCRAM-SHA-512"
    )
    sasl_username: str | None = setting("SASL user", None)
    sasl_password: Secret | None = secret(
        "SASL password: env TORCHKAFKA_SASL_PASSWORD, or a file named by --sasl-password-file"
    )
    ssl_ca_location: Path | None = setting("CA certificate (PEM) to verify the brokers", None)
    ssl_certificate_location: Path | None = setting("client certificate (PEM) for mTLS", None)
    ssl_key_location: Path | None = setting("client private key (PEM) for mTLS", None)
    ssl_key_password: Secret | None = secret(
        "password of the client key: env TORCHKAFKA_SSL_KEY_PASSWORD, or --ssl-key-password-file"
    )
    client: Mapping[str, str] = setting(
        "librdkafka settings for every client (KEY=VALUE)", factory=dict
    )
    consumer: Mapping[str, str] = setting(
        "librdkafka settings for the consumer only (KEY=VALUE)", factory=dict
    )
    producer: Mapping[str, str] = setting(
        "librdkafka settings for the producer only (KEY=VALUE)", factory=dict
    )

    def __post_init__(self) -> None:
        if self.security_protocol.startswith("sasl_") and not (
            self.sasl_username and self.sasl_password
        ):
            raise StartupError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (env TORCHKAFKA_SASL_PASSWORD or --sasl-password-file)"
            )
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise StartupError(f"{name}: {path} is not a file")

    def librdkafka(self) -> dict[str, str]:
        """The settings every client gets (secrets revealed: hand them to librdkafka only)."""
        settings = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("sasl_"):
            password = self.sasl_password.reveal() if self.sasl_password else ""
            settings |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username or "",
                "sasl.password": password,
            }
        files = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        settings |= {key: str(path) for key, path in files.items() if path is not None}
        if self.ssl_key_password is not None:
            settings["ssl.key.password"] = self.ssl_key_password.reveal()
        return {**settings, **self.client}


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Which model to serve and how: the one place the model's settings are named."""

    spec: str = setting(
        "model spec: torchvision:NAME, torchscript:PATH, export:PATH, aoti:PATH, python:MOD:FN",
        name="model",
    )
    weights: Path | None = setting("local state-dict file for torchvision models", None)
    device: str = setting("cpu, cuda, cuda:N or auto", "auto")
    preprocess: str = setting(
        "none, or imagenet ([3, H, W] images, uint8 pixels or floats in [0, 1] -> float32 "
        "normalized with ImageNet's mean and std)",
        "none",
    )
    postprocess: str = setting("raw (the output tensors) or topk:K", "raw")
    input_name: str = setting("which named request input feeds the model", "x")
    input_shape: tuple[int, ...] | None = setting(
        "shape of one input without the batch dimension, e.g. 3,224,224; when set, every "
        "batch bucket is warmed up before joining the group (needed by every backend but eager)",
        None,
    )
    input_dtype: str | None = setting(
        "the one dtype of that input the model takes, a wire dtype such as uint8: tensors of "
        "another are dead-lettered (unsupported_dtype), and images (uint8 pixels) are taken "
        "only when it is uint8 (default: uint8 with --preprocess imagenet, else float32)",
        None,
    )
    gpu_jpeg: bool = setting(
        "decode JPEG inputs on the model's CUDA device (nvJPEG via torchvision); PNG stays on "
        "the CPU",
        False,
    )
    backend: Backend = setting("eager, torchscript, compile, tensorrt (GPU) or int8 (CPU)", "eager")
    precision: Precision = setting("fp32, fp16 or bf16", "fp32")
    channels_last: bool = setting("run the model in channels_last memory format", False)
    compile_mode: str = setting(
        "torch.compile mode for --backend compile, e.g. max-autotune", "default"
    )
    calibration: Path | None = setting(
        "int8 calibration inputs: a .pt file holding one [N, ...] tensor, or a folder of images",
        None,
    )
    max_batch_size: int = setting(
        "largest batch the model runs (the micro-batch limit; adaptive sizing climbs to it)", 256
    )
    batch_buckets: tuple[int, ...] = setting(
        "batch sizes to pad partial batches up to, e.g. 1,8,32 (static shapes for tensorrt "
        "and CUDA graphs); empty: no padding",
        (),
    )
    cuda_graphs: bool = setting("replay CUDA graphs captured per batch bucket (CUDA only)", False)
    model_watch_s: float = setting(
        "check the model and weights files this often (seconds) and reload a changed one; "
        "0: reload on SIGHUP only",
        0.0,
    )
    torch_threads: int | None = setting(
        "torch's intra-op threads for the model on the CPU (default: the process's CPUs "
        "divided among --workers, at least 1)",
        None,
    )

    def __post_init__(self) -> None:
        positive(self, "max_batch_size")
        if self.torch_threads is not None:
            positive(self, "torch_threads")
        not_negative(self, "model_watch_s")
        if any(size < 1 for size in self.batch_buckets):
            raise StartupError(f"batch_buckets must be >= 1, got {list(self.batch_buckets)}")
        if self.batch_buckets and max(self.batch_buckets) != self.max_batch_size:
            raise StartupError(
                f"the largest batch bucket ({max(self.batch_buckets)}) must equal "
                f"max_batch_size ({self.max_batch_size}); set --max-batch-size too"
            )
        if self.input_shape is not None and any(dim < 1 for dim in self.input_shape):
            raise StartupError(f"input_shape dimensions must be >= 1, got {self.input_shape}")


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    """How records become batches: intake per poll, the batching window, the queue."""

    max_wait_ms: float = setting("longest a request waits for its batch to fill", 5.0)
    batch_sizing: BatchSizing = setting(
        "adaptive: batches close at a size that steps up (powers of two, or the batch "
        "buckets, up to --max-batch-size) while they close full and down when one leaves on "
        "its wait at most half full once caught up; fixed: every batch closes at "
        "--max-batch-size or when its wait ends",
        "adaptive",
    )
    latency_target_ms: float | None = setting(
        "adaptive sizing steps up only to a batch size whose measured model time (or the "
        "size below's, scaled) is within this many ms (default: no bound)",
        None,
    )
    inference_queue_batches: int = setting("batches queued for the model before pausing", 2)
    poll_batch: int = setting("most messages per consume() call", 500)
    image_decode_threads: int = setting(
        "threads decoding image inputs (JPEG, PNG) off the polling thread; "
        "0: one per CPU of the worker process, at most 4",
        0,
    )
    max_batch_mib: int = setting(
        "most MiB of inputs in one batch: larger inputs run in smaller batches, one that "
        "alone is larger runs alone (an RGB image takes 3 bytes a pixel)",
        512,
    )

    def __post_init__(self) -> None:
        positive(self, "inference_queue_batches", "poll_batch", "max_batch_mib")
        not_negative(self, "max_wait_ms", "image_decode_threads")
        if self.latency_target_ms is not None and not self.latency_target_ms > 0:
            raise StartupError(f"latency_target_ms must be > 0, got {self.latency_target_ms}")


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """Redis-backed dedup: whether, where, under which namespace, for how long, on outages."""

    dedup: DedupMode = setting(
        "redis: an id answered before is skipped, and a record that crashes workers is "
        "quarantined; off: no Redis at all (at-least-once: a redelivered or resubmitted "
        "request is answered again, and nothing is quarantined)",
        "redis",
    )
    redis_url: str = setting(
        "Redis for dedup (also env REDIS_URL); a user name may be in it, the password not",
        DEFAULT_REDIS_URL,
    )
    redis_password: Secret | None = secret(
        "Redis password (AUTH): env TORCHKAFKA_REDIS_PASSWORD, or --redis-password-file"
    )
    dedup_namespace: str | None = setting(
        "prefix of the dedup keys; workers that share it share their done-marks "
        "(default: torchkafka:OUTPUT_TOPIC, which a new model version keeps)",
        None,
    )
    dedup_ttl_s: int = setting("how long a done id is remembered", 7 * 24 * 3600)
    claim_ttl_ms: int = setting("lease of a worker's claim on an id in progress", 60_000)
    redis_outage: RedisOutage = setting("pause, or fail-open (run without dedup)", "pause")
    redis_state_loss: RedisStateLoss = setting(
        "when Redis lost its done-marks (restarted empty): pause until `torchkafka dedup "
        "accept-loss` or a restore, or continue (ids answered before may be answered again)",
        "pause",
    )
    shutdown_redis_wait_s: float = setting(
        "on shutdown, how long to wait for Redis to take the done-marks of delivered results "
        "before committing without them",
        10.0,
    )

    def __post_init__(self) -> None:
        positive(self, "dedup_ttl_s", "claim_ttl_ms")
        not_negative(self, "shutdown_redis_wait_s")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["redis_url"] = mask_url(self.redis_url)
        return f"DedupSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


@dataclass(frozen=True, slots=True)
class OperationsSettings:
    """Probes, metrics and how long stopping may take."""

    metrics_port: int = setting(
        "port of /metrics, /healthz and /readyz; worker i of --workers uses port+i, or the "
        "first free port above it when another process holds it (logged); 0 disables",
        9100,
    )
    metrics_host: str = setting(
        "address the metrics server listens on",
        "0.0.0.0",  # noqa: S104 - probes and scrapers come from outside the host
    )
    shutdown_timeout_s: float = setting(
        "longest a rebalance or a shutdown waits for in-flight batches; the supervisor's "
        "grace and the liveness probe's patience are derived from it",
        30.0,
    )
    startup_timeout_s: float = setting(
        "longest start-up waits, once the model is loaded, for Kafka and Redis to answer; "
        "past it the worker exits with a start-up error (exit code 2)",
        30.0,
    )

    def __post_init__(self) -> None:
        if not self.shutdown_timeout_s > 0:
            raise StartupError(f"shutdown_timeout_s must be > 0, got {self.shutdown_timeout_s}")
        if not self.startup_timeout_s > 0:
            raise StartupError(f"startup_timeout_s must be > 0, got {self.startup_timeout_s}")


#: The sections of ``WorkerConfig``: attribute name -> section type.
SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConnection,
    "model": ModelSettings,
    "batching": BatchingSettings,
    "dedup": DedupSettings,
    "dead_letters": DeadLetterSettings,
    "operations": OperationsSettings,
    "topics": TopicsSettings,
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything one worker process needs; ``torchkafka run --help`` describes each field."""

    input_topic: str = setting("topic to read requests from")
    output_topic: str = setting("topic to write results to")
    dead_letter_topic: str = setting("topic for requests that cannot be processed")
    model: ModelSettings = section()
    group_id: str = setting(
        "consumer group; workers in one group share the partitions", "torchkafka"
    )
    group_instance_id: str | None = setting(
        "static group membership: worker i of --workers joins as ID-i, so a restart within "
        "session.timeout.ms keeps its partitions",
        None,
    )
    group_protocol: GroupProtocol = setting(
        "classic (client-side cooperative-sticky assignment), or consumer (KIP-848: the "
        "broker assigns, and a member joining or leaving moves only its own partitions; "
        "Kafka 4.0+; session.timeout.ms is then the broker's group.consumer.session.timeout.ms)",
        "classic",
    )
    processing_guarantee: Guarantee = setting(
        "at-least-once (offsets committed once results are acknowledged: a worker killed "
        "between the two answers its records again), or exactly-once (results, dead letters "
        "and input offsets committed in one Kafka transaction; readers of the output topic "
        "must use isolation.level=read_committed)",
        "at-least-once",
    )
    transaction_ms: int = setting(
        "exactly-once: how often the open transaction is committed; results become visible "
        "to read_committed readers only then",
        100,
    )
    transactional_id: str | None = setting(
        "exactly-once: worker i of --workers produces as ID-i; keep it stable across restarts "
        "so a restarted worker fences its predecessor and aborts its open transaction at once "
        "(default: GROUP_ID.HOSTNAME)",
        None,
    )
    workers: int = setting("worker processes in this group, started by `run`", 1)
    kafka: KafkaConnection = section(KafkaConnection)
    batching: BatchingSettings = section(BatchingSettings)
    dedup: DedupSettings = section(DedupSettings)
    dead_letters: DeadLetterSettings = section(DeadLetterSettings)
    operations: OperationsSettings = section(OperationsSettings)
    topics: TopicsSettings = section(TopicsSettings)

    def __post_init__(self) -> None:
        positive(self, "workers", "transaction_ms")
        port = self.operations.metrics_port
        if not 0 <= port <= 65536 - self.workers:
            raise StartupError(
                f"metrics_port must be 0 (off) to {65536 - self.workers} (one port per "
                f"worker), got {port}"
            )
        if self.group_protocol == "consumer" and self.group_instance_id is not None:
            raise StartupError(
                "group_instance_id is refused with group_protocol=consumer: under KIP-848 a "
                "worker restarted after a crash is refused its instance id "
                "(UNRELEASED_INSTANCE_ID) until the broker's session timeout ends; use static "
                "membership with the classic protocol"
            )

    @property
    def retry_topics(self) -> tuple[tuple[str, int], ...]:
        """The retry tiers' topics, in order, with their delays in seconds."""
        delays = self.dead_letters.retry_delays_s
        return tuple((f"{self.input_topic}.retry.{n}", s) for n, s in enumerate(delays, 1))

    @property
    def dedup_namespace(self) -> str:
        """The dedup keys' prefix: the setting, else one per output topic."""
        return self.dedup.dedup_namespace or f"torchkafka:{self.output_topic}"

    @property
    def timeouts(self) -> Timeouts:
        """The waits of stopping, derived from one budget."""
        return Timeouts.derive(self.operations.shutdown_timeout_s, self.dedup.shutdown_redis_wait_s)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long stopping may take, derived from one budget so that each fits in the next.

    drain (in-flight batches) + Redis wait < the supervisor's grace before it
    kills a worker < the liveness probe's patience with a loop that does not
    step (a rebalance blocks the loop for up to a drain).
    """

    drain_s: float
    redis_wait_s: float
    stop_grace_s: float
    liveness_s: float

    #: Time for what follows the drain: flushing the producer, committing, leaving.
    MARGIN_S = 10.0

    @classmethod
    def derive(cls, drain_s: float, redis_wait_s: float) -> Timeouts:
        """The timeouts for a drain of ``drain_s`` and a Redis wait of ``redis_wait_s``."""
        grace = drain_s + redis_wait_s + cls.MARGIN_S
        return cls(drain_s, redis_wait_s, grace, grace + cls.MARGIN_S)


def group_membership(config: WorkerConfig, worker_index: int) -> dict[str, str]:
    """The consumer's group protocol and, when configured, worker ``worker_index``'s
    ``group.instance.id``."""
    membership = (
        {"group.protocol": "consumer"}
        if config.group_protocol == "consumer"
        else {"partition.assignment.strategy": "cooperative-sticky"}
    )
    if config.group_instance_id is not None:
        membership["group.instance.id"] = f"{config.group_instance_id}-{worker_index}"
    return membership
