"""Worker configuration: one frozen value, from a TOML file, the environment and flags.

Precedence, lowest to highest: defaults < config file < environment
(``TORCHKAFKA_<FIELD>``, e.g. ``TORCHKAFKA_MAX_BATCH_SIZE=64``) < command-line
flags. librdkafka settings pass through untouched from the file's
``[consumer]`` / ``[producer]`` tables and from ``--consumer-config`` /
``--producer-config KEY=VALUE`` flags.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from torchkafka.worker._env import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_REDIS_URL
from torchkafka.worker._errors import StartupError

RedisOutage = Literal["pause", "fail-open"]
Backend = Literal["eager", "torchscript", "compile", "tensorrt", "int8"]
Precision = Literal["fp32", "fp16", "bf16"]
ENV_PREFIX = "TORCHKAFKA_"
#: Plain environment variables that also configure the worker (as in the README).
ENV_ALIASES = {"KAFKA_BOOTSTRAP": "bootstrap", "REDIS_URL": "redis_url"}


def _field(
    help_text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING
) -> Any:
    return field(default=default, default_factory=factory, metadata={"help": help_text})


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything one worker process needs; ``torchkafka run --help`` describes each field."""

    model: str = _field(
        "model spec: torchvision:NAME, torchscript:PATH, export:PATH, aoti:PATH, python:MOD:FN"
    )
    input_topic: str = _field("topic to read requests from")
    output_topic: str = _field("topic to write results to")
    dead_letter_topic: str = _field("topic for requests that cannot be processed")
    group_id: str = _field(
        "consumer group; workers in one group share the partitions", "torchkafka"
    )
    bootstrap: str = _field(
        "Kafka bootstrap servers (also env KAFKA_BOOTSTRAP)", DEFAULT_KAFKA_BOOTSTRAP
    )
    weights: Path | None = _field("local state-dict file for torchvision models", None)
    device: str = _field("cpu, cuda, cuda:N or auto", "auto")
    preprocess: str = _field("none, or imagenet (uint8 images -> normalized float)", "none")
    postprocess: str = _field("raw (the output tensors) or topk:K", "raw")
    input_name: str = _field("which named request input feeds the model", "x")
    input_shape: tuple[int, ...] | None = _field(
        "shape of one input without the batch dimension, e.g. 3,224,224; when set, every "
        "batch bucket is warmed up before joining the group (needed by every backend but eager)",
        None,
    )
    input_dtype: str = _field("dtype of that input, a wire dtype such as uint8", "float32")
    image_decode_threads: int = _field(
        "threads decoding image inputs (JPEG, PNG) off the polling thread; "
        "0: one per CPU of the worker process, at most 4",
        0,
    )
    gpu_jpeg: bool = _field(
        "decode JPEG inputs on the model's CUDA device (nvJPEG via torchvision); PNG stays on "
        "the CPU",
        False,
    )
    backend: Backend = _field("eager, torchscript, compile, tensorrt (GPU) or int8 (CPU)", "eager")
    precision: Precision = _field("fp32, fp16 or bf16", "fp32")
    channels_last: bool = _field("run the model in channels_last memory format", False)
    compile_mode: str = _field(
        "torch.compile mode for --backend compile, e.g. max-autotune", "default"
    )
    calibration: Path | None = _field(
        "int8 calibration inputs: a .pt file holding one [N, ...] tensor, or a folder of images",
        None,
    )
    batch_buckets: tuple[int, ...] = _field(
        "batch sizes to pad partial batches up to, e.g. 1,8,32 (static shapes for tensorrt "
        "and CUDA graphs); empty: no padding",
        (),
    )
    cuda_graphs: bool = _field("replay CUDA graphs captured per batch bucket (CUDA only)", False)
    model_watch_s: float = _field(
        "check the model and weights files this often (seconds) and reload a changed one; "
        "0: reload on SIGHUP only",
        0.0,
    )
    max_batch_size: int = _field("largest micro-batch", 32)
    max_wait_ms: float = _field("longest a request waits for its batch to fill", 5.0)
    inference_queue_batches: int = _field("batches queued for the model before pausing", 2)
    poll_batch: int = _field("most messages per consume() call", 500)
    redis_url: str = _field("Redis for dedup (also env REDIS_URL)", DEFAULT_REDIS_URL)
    dedup_ttl_s: int = _field("how long a done id is remembered", 7 * 24 * 3600)
    claim_ttl_ms: int = _field("lease of a worker's claim on an id in progress", 60_000)
    redis_outage: RedisOutage = _field("pause, or fail-open (run without dedup)", "pause")
    shutdown_redis_wait_s: float = _field(
        "on shutdown, how long to wait for Redis to take the done-marks of delivered results "
        "before committing without them",
        10.0,
    )
    dead_letter_max_ratio: float = _field("stop when more of the window is dead-lettered", 0.5)
    dead_letter_window: int = _field("messages the ratio is measured over", 1000)
    dead_letter_max_consecutive: int = _field("stop after this many dead letters in a row", 100)
    workers: int = _field("worker processes in this group, started by `run`", 1)
    group_instance_id: str | None = _field(
        "static group membership: worker i of --workers joins as ID-i, so a restart within "
        "session.timeout.ms keeps its partitions",
        None,
    )
    metrics_port: int = _field(
        "port of /metrics, /healthz and /readyz; worker i of --workers uses port+i; 0 disables",
        9100,
    )
    metrics_host: str = _field(
        "address the metrics server listens on",
        "0.0.0.0",  # noqa: S104 - probes and scrapers come from outside the host
    )
    consumer: Mapping[str, str] = _field("librdkafka consumer settings (KEY=VALUE)", factory=dict)
    producer: Mapping[str, str] = _field("librdkafka producer settings (KEY=VALUE)", factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "inference_queue_batches", "poll_batch", "workers"):
            if getattr(self, name) < 1:
                raise StartupError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.metrics_port <= 65536 - self.workers:
            raise StartupError(
                f"metrics_port must be 0 (off) to {65536 - self.workers} (one port per "
                f"worker), got {self.metrics_port}"
            )
        if self.max_wait_ms < 0:
            raise StartupError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name, allowed in (
            ("redis_outage", RedisOutage),
            ("backend", Backend),
            ("precision", Precision),
        ):
            if getattr(self, name) not in get_args(allowed):
                choices = ", ".join(get_args(allowed))
                raise StartupError(f"{name} must be one of {choices}; got {getattr(self, name)!r}")
        if any(size < 1 for size in self.batch_buckets):
            raise StartupError(f"batch_buckets must be >= 1, got {list(self.batch_buckets)}")
        if self.batch_buckets and max(self.batch_buckets) != self.max_batch_size:
            raise StartupError(
                f"the largest batch bucket ({max(self.batch_buckets)}) must equal "
                f"max_batch_size ({self.max_batch_size}); set --max-batch-size too"
            )
        if self.input_shape is not None and any(dim < 1 for dim in self.input_shape):
            raise StartupError(f"input_shape dimensions must be >= 1, got {self.input_shape}")
        if self.shutdown_redis_wait_s < 0:
            raise StartupError(
                f"shutdown_redis_wait_s must be >= 0, got {self.shutdown_redis_wait_s}"
            )
        if self.model_watch_s < 0:
            raise StartupError(f"model_watch_s must be >= 0, got {self.model_watch_s}")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "redis_url"}
        return (
            f"WorkerConfig(redis_url={_mask(self.redis_url)!r}, "
            + ", ".join(f"{name}={value!r}" for name, value in shown.items())
            + ")"
        )


def static_membership(config: WorkerConfig, worker_index: int) -> dict[str, str]:
    """The consumer's ``group.instance.id`` for worker ``worker_index``, when configured."""
    if config.group_instance_id is None:
        return {}
    return {"group.instance.id": f"{config.group_instance_id}-{worker_index}"}


def _mask(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"


def load_config(
    file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> WorkerConfig:
    """Merge defaults, ``file``, ``environ`` and ``flags`` (None values are unset)."""
    values: dict[str, Any] = {}
    if file is not None:
        values.update(_from_file(file))
    values.update(_from_environ(environ))
    for name, value in flags.items():
        if name in ("consumer", "producer"):
            values[name] = {**values.get(name, {}), **value}
        elif value is not None:
            values[name] = value
    missing = [f.name for f in fields(WorkerConfig) if _required(f) and f.name not in values]
    if missing:
        raise StartupError(
            "missing configuration: "
            + ", ".join(f"{name} (--{name.replace('_', '-')})" for name in missing)
        )
    return WorkerConfig(**{name: _coerce(name, value) for name, value in values.items()})


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


_FIELD_TYPES = {f.name: f.type for f in fields(WorkerConfig)}


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise StartupError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_FIELD_TYPES))
    if unknown:
        raise StartupError(f"config file {path}: unknown keys {unknown}")
    return data


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        field_name: environ[variable]
        for variable, field_name in ENV_ALIASES.items()
        if environ.get(variable)
    }
    for name in _FIELD_TYPES:
        variable = ENV_PREFIX + name.upper()
        if name not in ("consumer", "producer") and environ.get(variable):
            values[name] = environ[variable]
    return values


def _coerce(name: str, value: Any) -> Any:
    """Environment strings (and TOML values) to the field's type."""
    kind = str(_FIELD_TYPES[name])
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path | None":
            return Path(value)
        if kind == "bool":
            return _boolean(value)
        if kind.startswith("tuple[int, ...]"):
            return _integers(value)
        if kind == "Mapping[str, str]":
            return {str(k): str(v) for k, v in dict(value).items()}
    except (TypeError, ValueError) as exc:
        raise StartupError(f"{name}: cannot use {value!r} ({exc})") from exc
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError("expected true or false")
    return text in _TRUE


def _integers(value: Any) -> tuple[int, ...]:
    """``"1,8,32"`` (flags, environment) or ``[1, 8, 32]`` (TOML) as a tuple of ints."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(int(part) for part in parts if str(part).strip())
