"""The ``torchkafka`` command line: thin; it parses, configures and calls."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from torchkafka.worker._argtypes import positive, positive_float, shape
from torchkafka.worker._cli_settings import (
    CONNECTION_SETTINGS,
    RUN_SETTINGS,
    SECTION_SETTINGS,
    TOPIC_NAMES,
    TOPICS_SETTINGS,
    add_settings,
    connection_settings,
    setting_flags,
)
from torchkafka.worker._cli_tools import add_consume, add_dlq, add_produce, add_retries
from torchkafka.worker._env import idle_model_threads_sleep, kafka_bootstrap, redis_url
from torchkafka.worker._errors import StartupError, WorkerError
from torchkafka.worker.config import load_config
from torchkafka.worker.ops import configure_logging


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchkafka",
        description="Serve a PyTorch model on a Kafka stream.",
        epilog="Environment: KAFKA_BOOTSTRAP (default 127.0.0.1:9092), "
        "REDIS_URL (default redis://127.0.0.1:6379/0), and TORCHKAFKA_<SETTING> for any "
        "`run` setting (e.g. TORCHKAFKA_MAX_BATCH_SIZE=64).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('torchkafka')}")
    parser.add_argument(
        "--log-format", choices=["console", "json"], default="console", help="log style on stderr"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run worker processes: requests in, one result per request out",
        description="Consume requests from --input-topic, run the model on micro-batches, "
        "publish one result per request to --output-topic and what cannot be processed to "
        "--dead-letter-topic. Settings come from (lowest to highest) defaults, --config FILE, "
        "TORCHKAFKA_<SETTING> environment variables, and these flags. SIGTERM or Ctrl-C "
        "drains in-flight work, commits and leaves the group. torch's CPU threads sleep "
        "between model calls (OMP_WAIT_POLICY=PASSIVE, unless the variable is set).",
    )
    add_settings(run, RUN_SETTINGS)

    topics = commands.add_parser(
        "topics",
        help="the input, output and dead-letter topics: plan, apply, create, describe, lag",
        description="plan: what `apply` would change to make the topics match the "
        "declaration (partitions, replication factor, topic configs: [topics] in the config "
        "file, or these flags); apply: make those changes, with --yes (missing topics are "
        "created, partitions added, configs set; nothing is deleted or shrunk); create: "
        "create the missing topics only; describe: partitions, leaders, in-sync replicas and "
        "the configs set on each topic; lag: the consumer group's committed and end offsets "
        "and lag per partition of the input topic, and which member holds which. Takes the "
        "same settings, file and environment variables as `run`; max.message.bytes follows "
        "the worker's message limit.",
    )
    topics.add_argument("action", choices=["plan", "apply", "create", "describe", "lag"])
    topics.add_argument("--yes", action="store_true", help="apply: make the planned changes")
    topics.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds to wait for each answer"
    )
    add_settings(topics, [*TOPIC_NAMES, "group_id", *CONNECTION_SETTINGS, *TOPICS_SETTINGS])

    model = commands.add_parser(
        "model",
        help="build an optimized model ahead of time",
        description="build: optimize the model as --backend says (torchscript, int8 or "
        "compile), check it against eager, and save it to --output, so that workers load it "
        "at once instead of compiling or calibrating at every start. Prints the model spec "
        "to serve it with (torchscript:PATH or aoti:PATH; then use --backend eager). Takes "
        "the same settings, file and environment variables as `run`; topics are not needed.",
    )
    model.add_argument("action", choices=["build"])
    model.add_argument("--output", type=Path, required=True, help="file to write")
    add_settings(model, SECTION_SETTINGS["model"])

    dedup = commands.add_parser(
        "dedup",
        help="repair the Redis dedup state after Redis lost its done-marks",
        description="accept-loss: write the dedup namespace's state key again after Redis "
        "lost its done-marks (restarted without its data), so that workers paused by "
        "redis_state_loss=pause go on. Ids answered before the loss may be answered again, "
        "once each. The namespace is --dedup-namespace, or torchkafka:OUTPUT_TOPIC; takes "
        "the same settings, file and environment variables as `run`.",
    )
    dedup.add_argument("action", choices=["accept-loss"])
    add_settings(dedup, ["output_topic", *SECTION_SETTINGS["dedup"]])

    add_dlq(commands)
    add_retries(commands)
    add_produce(commands)
    add_consume(commands)
    commands.add_parser(
        "bench",
        add_help=False,  # --help goes to the benchmark
        help="the worker next to hand-written loops and the bare model, side by side "
        "(a source checkout's bench/loops_bench.py; --help for its options)",
        prefix_chars="\0",  # every argument goes to the benchmark as it is
    ).add_argument("arguments", nargs="*")

    demo = commands.add_parser(
        "demo",
        help="the whole job on local Kafka and Redis, verified (what `make run` runs)",
        description="Create the demo topics, start a group of worker processes, produce "
        "synthetic images plus a few malformed messages and re-submitted ids, read results "
        "and dead letters back, verify exactly one result per input, print a summary and "
        "stop the workers. Needs Kafka and Redis running (`make up`). Exits 1 on a mismatch.",
    )
    demo.add_argument(
        "--bootstrap",
        default=kafka_bootstrap(),
        help="Kafka bootstrap servers (default: %(default)s, from KAFKA_BOOTSTRAP if set)",
    )
    demo.add_argument("--redis-url", default=redis_url(), help="Redis for dedup")
    demo.add_argument("--count", type=positive, default=3000, help="inputs to send")
    demo.add_argument("--workers", type=positive, default=2, help="worker processes")
    demo.add_argument("--model", default="torchvision:resnet18", help="model spec")
    demo.add_argument(
        "--shape", type=shape, default=[3, 64, 64], help="uint8 image shape, e.g. 3,224,224"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchkafka`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    if args.command == "run":
        return _run(parser, args)
    if args.command == "topics":
        return _topics(parser, args)
    if args.command == "model":
        return _model_build(parser, args)
    if args.command == "dedup":
        return _dedup(parser, args)
    if args.command == "dlq":
        return _dlq(parser, args)
    if args.command == "retries":
        return _retries(parser, args)
    if args.command == "produce":
        return _produce(parser, args)
    if args.command == "consume":
        return _consume(parser, args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "bench":
        from torchkafka.worker.tools import run_bench

        return run_bench(args.arguments)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    idle_model_threads_sleep()  # before torch loads; worker processes inherit it
    try:
        config = load_config(args.config, os.environ, setting_flags(args, RUN_SETTINGS))
    except StartupError as exc:
        parser.error(str(exc))
    if config.workers == 1:
        from torchkafka.worker.app import run_in_this_process

        return run_in_this_process(config)
    from torchkafka.worker.supervisor import run_processes

    return run_processes(config, args.log_format, args.log_level)


def _model_build(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    flags = setting_flags(args, SECTION_SETTINGS["model"])
    unused_topics = {"input_topic": "-", "output_topic": "-", "dead_letter_topic": "-"}
    try:
        config = load_config(args.config, os.environ, {**flags, **unused_topics})
    except StartupError as exc:
        parser.error(str(exc))
    from torchkafka.worker.model import build_artifact, resolve_device

    try:
        spec = build_artifact(config.model, resolve_device(config.model.device), args.output)
    except StartupError as exc:
        print(f"torchkafka model build: {exc}", file=sys.stderr)
        return 2
    print(spec)
    return 0


def _dedup(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    flags = setting_flags(args, ["output_topic", *SECTION_SETTINGS["dedup"]])
    unused = {"model": "-", "input_topic": "-", "dead_letter_topic": "-"}
    if flags["dedup_namespace"] is not None and flags["output_topic"] is None:
        unused["output_topic"] = "-"  # the namespace is all the command needs
    try:
        config = load_config(args.config, os.environ, {**flags, **unused})
    except StartupError as exc:
        parser.error(str(exc))
    from torchkafka.worker._redis_setup import accept_dedup_loss

    try:
        accept_dedup_loss(config)
    except WorkerError as exc:
        print(f"torchkafka dedup: {exc}", file=sys.stderr)
        return 1
    print(f"{config.dedup_namespace}: loss accepted; workers go on")
    return 0


def _topics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import run_topics

    flags = setting_flags(args, [*TOPIC_NAMES, "group_id", *CONNECTION_SETTINGS, *TOPICS_SETTINGS])
    try:
        config = load_config(args.config, os.environ, {**flags, "model": "-"})
    except StartupError as exc:
        parser.error(str(exc))
    return run_topics(args.action, config, yes=args.yes, timeout_s=args.timeout)


def _dlq(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import (
        ReplayPlan,
        Selection,
        inspect_dead_letters,
        parse_time_ms,
        replay_dead_letters,
    )

    flags = setting_flags(args, ["input_topic", "dead_letter_topic", *CONNECTION_SETTINGS])
    try:
        config = load_config(args.config, os.environ, {**flags, "model": "-", "output_topic": "-"})
        since = None if args.since is None else parse_time_ms(args.since)
        until = None if args.until is None else parse_time_ms(args.until)
    except (StartupError, ValueError) as exc:
        parser.error(str(exc))
    selection = Selection(frozenset(args.reason), frozenset(args.id), since, until)
    connection = config.kafka.librdkafka()
    if args.action == "inspect":
        return inspect_dead_letters(connection, config.dead_letter_topic, selection, args.samples)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = None if args.dry_run else args.record or Path(f"dlq-replay-{stamp}.jsonl")
    plan = ReplayPlan(config.dead_letter_topic, config.input_topic, args.rate, record)
    return replay_dead_letters(connection, plan, selection)


def _retries(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import run_retries

    flags = setting_flags(args, ["input_topic", "group_id", "retry_delays_s", *CONNECTION_SETTINGS])
    unused = {"model": "-", "output_topic": "-", "dead_letter_topic": "-"}
    try:
        config = load_config(args.config, os.environ, {**flags, **unused})
    except StartupError as exc:
        parser.error(str(exc))
    if not config.retry_topics:
        parser.error("no retry tiers: set retry_delays_s (e.g. --retry-delays-s 10,60,600)")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return run_retries(config, stop)


def _produce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import ProduceSettings, run_produce

    settings = ProduceSettings(
        connection=connection_settings(parser, args),
        topic=args.topic,
        count=args.count,
        id_prefix=args.id_prefix or uuid.uuid4().hex[:8],
        shape=tuple(args.shape),
        dtype=args.dtype,
        images=args.images,
        rate=args.rate,
        deadline_ms=args.deadline_ms,
        input_name=args.input_name,
    )
    try:
        return run_produce(settings)
    except StartupError as exc:
        parser.error(str(exc))


def _consume(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import ConsumeSettings, run_consume

    settings = ConsumeSettings(
        connection=connection_settings(parser, args),
        topic=args.topic,
        group_id=args.group_id or f"torchkafka-consume-{uuid.uuid4().hex[:8]}",
        from_beginning=args.from_beginning,
        output_format=args.format,
        count=args.count,
        idle_timeout_s=args.timeout,
    )
    return run_consume(settings)


def _demo(args: argparse.Namespace) -> int:
    from torchkafka.worker.tools import DemoSettings, print_report, run_demo

    settings = DemoSettings(
        bootstrap=args.bootstrap,
        redis_url=args.redis_url,
        count=args.count,
        workers=args.workers,
        model=args.model,
        shape=tuple(args.shape),
    )
    report = run_demo(settings)
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
