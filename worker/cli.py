"""The ``torchkafka`` command line: thin; it parses, configures and calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

from torchkafka.worker._env import kafka_bootstrap
from torchkafka.worker._logging import configure_logging


def _shape(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(dim < 0 for dim in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be >= 0, got {text!r}")
    return dims


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchkafka",
        description="Serve a PyTorch model on a Kafka stream.",
        epilog="Environment: KAFKA_BOOTSTRAP (default 127.0.0.1:9092), "
        "REDIS_URL (default redis://127.0.0.1:6379/0).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('torchkafka')}")
    parser.add_argument(
        "--log-format", choices=["console", "json"], default="console", help="log style on stderr"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    roundtrip = commands.add_parser(
        "roundtrip",
        help="send encoded tensors through Kafka and verify them on the way back",
        description="Produce COUNT encoded tensor requests to TOPIC, read them back with a "
        "fresh consumer group, decode each and check it equals what was sent. "
        "Exits 1 if any message is missing, undecodable or different.",
    )
    roundtrip.add_argument(
        "--bootstrap",
        default=kafka_bootstrap(),
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)",
    )
    roundtrip.add_argument("--topic", default="torchkafka.roundtrip", help="topic to use")
    roundtrip.add_argument(
        "--partitions", type=_positive, default=3, help="partitions if the topic is created"
    )
    roundtrip.add_argument("--count", type=_positive, default=2000, help="messages to send")
    roundtrip.add_argument(
        "--shape", type=_shape, default=[3, 64, 64], help="tensor shape, e.g. 3,224,224"
    )
    roundtrip.add_argument(
        "--dtype", default="uint8", help="a wire dtype name (docs/wire-format.md), e.g. float32"
    )
    roundtrip.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the messages to return"
    )
    roundtrip.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchkafka`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    if args.command == "roundtrip":
        return _roundtrip(parser, args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def _roundtrip(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Imported here so that `--help` does not wait for torch to load.
    from torchkafka.codecs import DTYPES
    from torchkafka.topology import TopicSpec, admin_client, ensure_topics
    from torchkafka.worker._roundtrip import run_round_trip

    if args.dtype not in DTYPES:
        parser.error(f"unknown --dtype {args.dtype!r}; choose from {', '.join(sorted(DTYPES))}")

    ensure_topics(admin_client(args.bootstrap), [TopicSpec(args.topic, partitions=args.partitions)])
    report = run_round_trip(
        args.bootstrap,
        args.topic,
        args.count,
        args.shape,
        args.dtype,
        timeout_s=args.timeout,
        progress=not args.no_progress,
    )
    megabytes = report.payload_bytes / 1e6
    print(f"\nround trip through {args.bootstrap} topic {args.topic!r}")
    print(f"  sent        {report.sent:>8} messages, {megabytes:.1f} MB of tensor payload")
    print(f"  received    {report.received:>8}")
    print(f"  undecodable {report.undecodable:>8}")
    print(f"  mismatched  {report.mismatched:>8}")
    print(f"  produce     {report.sent / report.produce_s:>8.0f} msg/s")
    consume_rate = report.received / report.consume_s if report.consume_s else 0.0
    print(f"  consume     {consume_rate:>8.0f} msg/s (after the consumer joined)")
    print("  result      " + ("OK: every tensor came back equal" if report.ok else "FAILED"))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
