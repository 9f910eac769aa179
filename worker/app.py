"""The composition root: builds Kafka, Redis and the model from a config, then runs.

The only module that creates clients; everything else gets them passed in.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import ExitStack, closing
from functools import partial
from types import FrameType

import redis
import structlog
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from torchkafka.codecs import DEFAULT_LIMITS, TorchKafkaError
from torchkafka.topology import SizeLimits
from torchkafka.worker._errors import StartupError, TransientError
from torchkafka.worker.config import DedupSettings, WorkerConfig, group_membership
from torchkafka.worker.kafka import (
    ClientReport,
    CommitResults,
    Committer,
    KafkaPublisher,
    LoopTimings,
    OffsetCommits,
    TransactionalOutbox,
    TransactionCommits,
    WorkerLoop,
    group_has_commits,
    make_admin,
    make_consumer,
    make_producer,
)
from torchkafka.worker.model import Reloader, build_runtime, resolve_device, watched_files
from torchkafka.worker.ops import Health, WorkerMetrics, health_endpoints
from torchkafka.worker.pipeline import (
    CrashGuard,
    DeadLetterGuard,
    DedupStore,
    DeviceJpeg,
    DoneMarks,
    Gate,
    GuardedPublisher,
    ImageDecoder,
    InferenceWorker,
    MicroBatcher,
    Outbox,
    RetrySettings,
    Settlement,
    StagingPool,
    decode_threads,
)

log = structlog.get_logger(__name__)

#: Start-up asks Kafka for its topics with this patience first, then twice as much each time.
_FIRST_ASK_S = 1.0
#: How often start-up pings a Redis that does not answer.
_REDIS_RETRY_S = 0.5
#: Redis errors that mean it answered, refusing the worker (the store's ping names them).
_REDIS_REFUSALS = (rx.AuthenticationError, rx.AuthorizationError, rx.ExternalAuthProviderError)
#: Exactly-once: the broker aborts a transaction open longer (as Kafka Streams does).
TRANSACTION_TIMEOUT_MS = 10_000


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
    listen, from the start, on ``metrics_port + worker_index`` (unless the
    port is 0).
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
        topics_bytes = _check_topics(config, deadline)
        dedup = _dedup_store(config, me, metrics, health, cleanup, deadline)
        sizes = SizeLimits(DEFAULT_LIMITS.max_message_bytes)
        exactly_once = config.processing_guarantee == "exactly-once"
        producer = make_producer(
            config.kafka,
            {
                "enable.idempotence": True,
                "linger.ms": 2,
                "client.id": me,
                **sizes.producer(topics_bytes),
                **(_transactional(config, worker_index) if exactly_once else {}),
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
            _init_transactions(producer, deadline)
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
        inference = InferenceWorker(
            runtime,
            StagingPool(pin_memory=device.type == "cuda"),
            guarded,
            me,
            batching.inference_queue_batches,
            metrics,
            device_jpeg=device_jpeg,
            crash_guard=CrashGuard(dedup, limits.quarantine_after_crashes),
        )
        images = ImageDecoder(
            decode_threads(batching.image_decode_threads, runtime.num_threads),
            device_jpeg=device_jpeg is not None,
        )
        cleanup.callback(images.close)
        commit_results = CommitResults()
        consumer = make_consumer(
            config.kafka,
            {
                "on_commit": commit_results.on_commit,
                "group.id": config.group_id,
                "client.id": me,
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                **sizes.consumer(),
                **group_membership(config, worker_index),
            },
        )
        dedup.check_state(
            lambda: group_has_commits(
                consumer, config.input_topic, max(1.0, deadline - time.monotonic())
            )
        )
        gate = Gate(
            guarded,
            dedup,
            DEFAULT_LIMITS,
            model.input_name,
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


def _transactional(config: WorkerConfig, worker_index: int) -> dict[str, str | int]:
    """Exactly-once producer settings: worker ``worker_index``'s stable transactional.id."""
    prefix = config.transactional_id or f"{config.group_id}.{socket.gethostname()}"
    return {
        "transactional.id": f"{prefix}-{worker_index}",
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def _init_transactions(producer: Producer, deadline: float) -> None:
    """Register the transactional.id (fencing and aborting a predecessor's), begin one."""
    try:
        producer.init_transactions(max(1.0, deadline - time.monotonic()))
        producer.begin_transaction()
    except KafkaException as exc:
        raise StartupError(f"cannot start Kafka transactions: {exc.args[0]}") from exc


def _dedup_store(
    config: WorkerConfig,
    me: str,
    metrics: WorkerMetrics,
    health: Health,
    cleanup: ExitStack,
    deadline: float,
) -> DedupStore:
    """The Redis-backed dedup store, its connection closed with ``cleanup``.

    Unless the worker may fail open (and run without Redis), Redis must answer
    by ``deadline``, and readiness follows whether it still does.
    """
    settings = config.dedup
    client = cleanup.enter_context(closing(_redis_client(settings, me)))
    if settings.redis_outage == "pause":
        _wait_for_redis(client, config.operations.startup_timeout_s, deadline)
        health.watch(partial(_redis_problem, client))
    dedup = DedupStore(
        client,
        namespace=config.dedup_namespace,
        done_ttl_s=settings.dedup_ttl_s,
        claim_ttl_ms=settings.claim_ttl_ms,
        retry=RetrySettings(),
        metrics=metrics,
        state_loss=settings.redis_state_loss,
    )
    health.watch(dedup.state_problem)
    try:
        dedup.ping()
    except TransientError as exc:
        log.warning("redis does not answer yet; consumption waits for it", error=str(exc))
    return dedup


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
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
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


def _redis_client(settings: DedupSettings, name: str) -> redis.Redis:
    # The DedupStore's retry policy alone decides how long a call may take.
    password = settings.redis_password.reveal() if settings.redis_password else None
    return redis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        client_name=f"torchkafka/{name}",
    )


def _wait_for_redis(client: redis.Redis, timeout_s: float, deadline: float) -> None:
    """PING Redis until it answers, even with a refusal; a ``StartupError`` at ``deadline``."""
    while (error := _redis_not_reached(client)) is not None:
        if time.monotonic() >= deadline:
            raise StartupError(f"redis does not answer within {timeout_s:g} s: {error}") from error
        time.sleep(_REDIS_RETRY_S)


def _redis_not_reached(client: redis.Redis) -> rx.RedisError | None:
    """The error of a PING that did not reach Redis; None if Redis answered (a refusal too)."""
    try:
        client.ping()
    except rx.RedisError as exc:
        unreached = isinstance(exc, (rx.ConnectionError, rx.TimeoutError))
        if unreached and not isinstance(exc, _REDIS_REFUSALS):
            return exc
    return None


def _redis_problem(client: redis.Redis) -> str | None:
    """Readiness: why the worker cannot use Redis now (one PING), or None."""
    try:
        client.ping()
    except rx.RedisError as exc:
        return f"redis is unusable: {exc}"
    return None


def _check_topics(config: WorkerConfig, deadline: float) -> int | None:
    """Check that the topics exist; the smallest ``max.message.bytes`` of those written to.

    None if the topics' settings cannot be read (an ACL may deny it): the
    producer keeps its own limit then.
    """
    report = ClientReport()
    admin = make_admin(config.kafka, report)
    wanted = {config.input_topic, config.output_topic, config.dead_letter_topic}
    missing = sorted(wanted - _kafka_topics(config, admin, report, deadline))
    if missing:
        raise StartupError(
            f"topics {missing} do not exist on {config.kafka.bootstrap}; create them first "
            "(torchkafka topics create ...)"
        )
    written = [config.output_topic, config.dead_letter_topic]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in written]
    try:
        described = admin.describe_configs(resources, request_timeout=_FIRST_ASK_S * 10)
        limits = [int(future.result()["max.message.bytes"].value) for future in described.values()]
    except (KafkaException, KeyError, ValueError) as exc:
        log.warning("cannot read the topics' max.message.bytes", error=str(exc))
        return None
    return min(limits)


def _kafka_topics(
    config: WorkerConfig, admin: AdminClient, report: ClientReport, deadline: float
) -> set[str]:
    """The cluster's topics, asked for with more patience each time until ``deadline``.

    What ``admin`` says meanwhile goes to its ``report``, not the log: a
    broker that refuses the worker (credentials, TLS) ends the wait at once,
    and the ``StartupError`` names the most telling thing the client said.
    """
    patience_s = min(_FIRST_ASK_S, config.operations.startup_timeout_s)
    while True:
        began = time.monotonic()
        try:
            return set(admin.list_topics(timeout=patience_s).topics)
        except KafkaException as exc:
            admin.poll(0)  # hands what the client said to the report
            if report.refused or began + patience_s >= deadline:
                raise StartupError(_kafka_failure(config, report, exc)) from exc
        time.sleep(max(0.0, began + patience_s - time.monotonic()))
        patience_s = min(2 * patience_s, deadline - began - patience_s)


def _kafka_failure(config: WorkerConfig, report: ClientReport, error: KafkaException) -> str:
    """The start-up error's text: refused, or no answer in time, and what the client said."""
    cause = report.cause() or str(error)
    bootstrap = config.kafka.bootstrap
    if report.refused:
        return f"Kafka at {bootstrap} refused the worker: {cause}"
    timeout_s = config.operations.startup_timeout_s
    return f"Kafka at {bootstrap} does not answer within {timeout_s:g} s: {cause}"


def accept_dedup_loss(config: WorkerConfig) -> None:
    """Write ``config``'s dedup state key again, after Redis lost its done-marks."""
    with closing(_redis_client(config.dedup, "dedup-admin")) as client:
        DedupStore(
            client,
            namespace=config.dedup_namespace,
            done_ttl_s=config.dedup.dedup_ttl_s,
            claim_ttl_ms=config.dedup.claim_ttl_ms,
            retry=RetrySettings(),
        ).accept_loss()
