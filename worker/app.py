"""The composition root: builds Kafka, Redis and the model from a config, then runs.

The only module that creates clients; everything else gets them passed in.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import ExitStack
from types import FrameType

import structlog
from confluent_kafka import KafkaException

from torchkafka.codecs import DEFAULT_LIMITS, TorchKafkaError
from torchkafka.topology import SizeLimits
from torchkafka.worker._errors import StartupError
from torchkafka.worker._redis_setup import dedup_store
from torchkafka.worker.config import (
    BatchingSettings,
    ModelSettings,
    WorkerConfig,
    group_membership,
)
from torchkafka.worker.kafka import (
    STATISTICS_INTERVAL_MS,
    TRANSACTION_TIMEOUT_MS,
    CommitResults,
    Committer,
    GroupWatch,
    KafkaPublisher,
    LoopTimings,
    OffsetCommits,
    TransactionalOutbox,
    TransactionCommits,
    WorkerLoop,
    check_topics,
    group_has_commits,
    init_transactions,
    kafka_error,
    make_consumer,
    make_producer,
    transactional_settings,
)
from torchkafka.worker.model import (
    Reloader,
    build_runtime,
    input_dtype,
    resolve_device,
    watched_files,
)
from torchkafka.worker.ops import Health, WorkerMetrics, health_endpoints
from torchkafka.worker.pipeline import (
    BatchSizer,
    CrashGuard,
    DeadLetterGuard,
    Dedup,
    DeviceJpeg,
    DoneMarks,
    Gate,
    GuardedPublisher,
    ImageDecoder,
    InferenceWorker,
    InputSpec,
    MicroBatcher,
    NoDedup,
    Outbox,
    RetryTiers,
    Settlement,
    StagingPool,
    decode_threads,
    ladder,
)

log = structlog.get_logger(__name__)


def worker_id() -> str:
    """This process's name in results, dead letters and claims: host/pid."""
    return f"{socket.gethostname()}/{os.getpid()}"


def run_worker(
    config: WorkerConfig,
    stop: threading.Event,
    worker_index: int = 0,
    reload: threading.Event | None = None,
) -> None:
    """Load the model, connect, and process until ``stop`` is set (or a fatal error).

    The model is built and warmed up before the consumer joins its group, so
    a rebalance never hands partitions to a worker that cannot serve them
    yet. Setting ``reload`` (SIGHUP) loads the model again beside the running
    one and swaps it in between batches. The metrics and health endpoints
    listen, from the start, on ``metrics_port + worker_index`` or the first
    free port above it (unless the port is 0).
    """
    metrics = WorkerMetrics()
    health = Health(stop, liveness_timeout_s=config.timeouts.liveness_s)
    ops = config.operations
    port = ops.metrics_port + worker_index if ops.metrics_port else 0
    with health_endpoints(ops.metrics_host, port, health, metrics.registry):
        _run(config, stop, metrics, health, worker_index, reload)


def _run(
    config: WorkerConfig,
    stop: threading.Event,
    metrics: WorkerMetrics,
    health: Health,
    worker_index: int,
    reload: threading.Event | None,
) -> None:
    with ExitStack() as cleanup:  # undone in reverse, on any exit
        me = worker_id()
        structlog.contextvars.bind_contextvars(worker=me)
        model = config.model
        device = resolve_device(model.device)
        device_jpeg = DeviceJpeg(device) if model.gpu_jpeg else None
        model_input = InputSpec(model.input_name, input_dtype(model))
        runtime = build_runtime(model, device, config.workers)
        log.info(
            "model loaded",
            model=runtime.info.name,
            version=runtime.info.version,
            device=str(device),
            backend=model.backend,
            precision=model.precision,
        )
        health.model_loaded()
        deadline = time.monotonic() + config.operations.startup_timeout_s
        topics_bytes = check_topics(config, deadline)
        store = (
            dedup_store(config, me, metrics, health, cleanup, deadline)
            if config.dedup.dedup == "redis"
            else None
        )
        dedup: Dedup = NoDedup() if store is None else store
        if store is None:
            log.warning("dedup is off: ids answered before are answered again; none quarantined")
        sizes = SizeLimits(DEFAULT_LIMITS.max_message_bytes)
        exactly_once = config.processing_guarantee == "exactly-once"
        producer = make_producer(
            config.kafka,
            {
                "enable.idempotence": True,
                "linger.ms": 2,
                "client.id": me,
                **sizes.producer(topics_bytes),
                **(transactional_settings(config, worker_index) if exactly_once else {}),
            },
        )
        cleanup.callback(producer.flush, 10)
        publisher = KafkaPublisher(
            producer,
            config.output_topic,
            config.dead_letter_topic,
            me,
            metrics,
            transactional=exactly_once,
        )
        outbox: Outbox = publisher
        if exactly_once:
            init_transactions(producer, deadline)
            outbox = TransactionalOutbox(publisher)
        limits = config.dead_letters
        guarded = GuardedPublisher(
            outbox,
            DeadLetterGuard(
                limits.dead_letter_max_ratio,
                limits.dead_letter_window,
                limits.dead_letter_max_consecutive,
            ),
        )
        batching = config.batching
        sizer = batch_sizer(batching, model)
        retry_topics = [name for name, _ in config.retry_topics]
        inference = InferenceWorker(
            runtime,
            StagingPool(pin_memory=device.type == "cuda"),
            RetryTiers(guarded, retry_topics) if retry_topics else guarded,
            me,
            batching.inference_queue_batches,
            metrics,
            device_jpeg=device_jpeg,
            crash_guard=CrashGuard(store, limits.quarantine_after_crashes),
            batch_times=sizer.ran if sizer else None,
        )
        images = ImageDecoder(
            decode_threads(batching.image_decode_threads, runtime.num_threads),
            device_jpeg=device_jpeg is not None,
        )
        cleanup.callback(images.close)
        commit_results = CommitResults()
        group_watch = GroupWatch()
        health.watch(group_watch.problem)
        consumer = make_consumer(
            config.kafka,
            {
                "on_commit": commit_results.on_commit,
                "stats_cb": group_watch.on_stats,
                "statistics.interval.ms": STATISTICS_INTERVAL_MS,
                "group.id": config.group_id,
                "client.id": me,
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                **sizes.consumer(),
                **group_membership(config, worker_index),
            },
        )
        if store is not None:
            store.check_state(
                lambda: group_has_commits(
                    consumer, config.input_topic, max(1.0, deadline - time.monotonic())
                )
            )
        gate = Gate(
            guarded,
            dedup,
            DEFAULT_LIMITS,
            model_input,
            me,
            fail_open=config.dedup.redis_outage == "fail-open",
            images=images,
        )
        marks = DoneMarks(outbox, dedup, me, metrics, fail_open=gate.fail_open)
        timeouts = config.timeouts
        settlement = Settlement(gate)
        commits: Committer = OffsetCommits(
            consumer, settlement, marks, outbox, commit_results, timeouts.redis_wait_s
        )
        if isinstance(outbox, TransactionalOutbox):
            commits = TransactionCommits(
                producer,
                consumer,
                outbox,
                settlement,
                marks,
                metrics,
                interval_s=config.transaction_ms / 1000,
                timeout_s=TRANSACTION_TIMEOUT_MS / 1000,
                redis_wait_s=timeouts.redis_wait_s,
            )
        loop = WorkerLoop(
            consumer=consumer,
            input_topic=config.input_topic,
            gate=gate,
            settlement=settlement,
            marks=marks,
            commits=commits,
            inference=inference,
            batcher=MicroBatcher(
                model.max_batch_size,
                batching.max_wait_ms / 1000,
                max_batch_bytes=batching.max_batch_mib << 20,
                sizer=sizer,
            ),
            poll_batch=batching.poll_batch,
            metrics=metrics,
            health=health,
            timings=LoopTimings(
                drain_s=timeouts.drain_s,
                claim_renew_s=config.dedup.claim_ttl_ms / 1000 / 3,
            ),
        )
        reloader = Reloader(
            lambda: inference.swap_runtime(build_runtime(model, device, config.workers)),
            watched_files(model),
            model.model_watch_s,
            requests=reload,
        )
        health.watch_inference(inference.stalled_for)
        inference.start()
        cleanup.callback(inference.stop, 5)
        marks.start()
        cleanup.callback(marks.stop)
        reloader.start()
        cleanup.callback(reloader.stop, 5)
        log.info("consuming", topic=config.input_topic, group=config.group_id)
        loop.run(stop)
        log.info("stopped")


def batch_sizer(batching: BatchingSettings, model: ModelSettings) -> BatchSizer | None:
    """The adaptive batch sizer the settings ask for (None: fixed sizes)."""
    if batching.batch_sizing == "fixed":
        return None
    target_ms = batching.latency_target_ms
    return BatchSizer(
        ladder(model.max_batch_size, model.batch_buckets),
        None if target_ms is None else target_ms / 1000,
    )


def run_in_this_process(config: WorkerConfig, worker_index: int = 0) -> int:
    """Run one worker until SIGTERM/SIGINT, reloading on SIGHUP; the exit code (errors logged)."""
    try:
        run_worker(config, stop_on_signals(), worker_index, reload_on_sighup())
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    except TorchKafkaError as exc:
        log.error("worker stopped on an error", error=str(exc), cause=repr(exc.__cause__))
        return 1
    except KafkaException as exc:  # a client error the worker has no better word for
        error = kafka_error(exc)
        log.error(
            "worker stopped on a Kafka error",
            error=error.str() if error else str(exc),
            code=error.name() if error else None,
        )
        return 1
    return 0


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (graceful shutdown); call on the main thread."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def reload_on_sighup() -> threading.Event:
    """An event set by SIGHUP (reload the model); call on the main thread."""
    reload = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGHUP, handle)
    return reload
