"""The client-side commands' own flags: dlq, retries, produce, consume."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeAlias

from torchkafka.worker._argtypes import positive, positive_float, shape
from torchkafka.worker._cli_settings import CONNECTION_SETTINGS, add_settings

#: The subcommands of the parser (a string: argparse's class is not subscriptable at run time).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_dlq(commands: Commands) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="dead letters: counts by reason and time, samples, and replay after a fix",
        description="inspect: read the dead-letter topic (to its current end; nothing is "
        "committed) and print the selected dead letters' counts by reason and by hour, and "
        "samples decoded as far as they decode. replay: send the selected dead letters to the "
        "input topic again, after a fix, with their original key, value and headers (the same "
        "request id: an id answered meanwhile is not answered twice), at most --rate a second; "
        "each one sent is written to --record as a JSON line. Takes the same settings, file "
        "and environment variables as `run`.",
    )
    dlq.add_argument("action", choices=["inspect", "replay"])
    dlq.add_argument("--reason", action="append", default=[], help="only this reason; repeatable")
    dlq.add_argument("--id", action="append", default=[], help="only this request id; repeatable")
    dlq.add_argument(
        "--since", help="dead-lettered at or after: ISO-8601 (UTC if no zone), or 30m, 2h, 7d ago"
    )
    dlq.add_argument("--until", help="dead-lettered before: as --since")
    dlq.add_argument("--samples", type=int, default=5, help="inspect: dead letters to show")
    dlq.add_argument("--dry-run", action="store_true", help="replay: list, send nothing")
    dlq.add_argument("--rate", type=positive_float, help="replay: most records a second")
    dlq.add_argument(
        "--record",
        type=Path,
        help="replay: JSON-lines file of what was sent (appended; default "
        "dlq-replay-TIME.jsonl in the current directory)",
    )
    add_settings(dlq, ["input_topic", "dead_letter_topic", *CONNECTION_SETTINGS])


def add_produce(commands: Commands) -> None:
    produce = commands.add_parser(
        "produce",
        help="send synthetic tensors or a folder of images as requests",
        description="Send --count requests to --topic: one random tensor (--shape, --dtype) "
        "in every request, or the JPEG/PNG files of --images DIR, cycled. Ids are "
        "PREFIX-0, PREFIX-1, ... (the key is the id); meta carries sent_ms, which "
        "`consume` turns into end-to-end latency. A full local queue is waited out, never "
        "dropped. Prints a one-line summary; exits 1 if any delivery failed.",
    )
    produce.add_argument("--topic", required=True, help="input topic")
    add_settings(produce, CONNECTION_SETTINGS)
    produce.add_argument(
        "--count", type=positive, default=1000, help="requests to send (default: %(default)s)"
    )
    source = produce.add_mutually_exclusive_group()
    source.add_argument(
        "--shape",
        type=shape,
        default="3,224,224",
        help="synthetic tensor shape (default: %(default)s)",
    )
    source.add_argument(
        "--images", type=Path, metavar="DIR", help="send the .jpg/.jpeg/.png files in DIR"
    )
    produce.add_argument(
        "--dtype",
        default="uint8",
        help="synthetic tensor dtype, a wire dtype such as float32 (default: %(default)s)",
    )
    produce.add_argument(
        "--rate", type=positive_float, help="messages per second (default: as fast as possible)"
    )
    produce.add_argument("--id-prefix", help="request ids are PREFIX-N (default: a random run id)")
    produce.add_argument(
        "--deadline-ms",
        type=positive,
        help="give each request a deadline this many ms after it is sent (default: none)",
    )
    produce.add_argument(
        "--input-name", default="x", help="name of the request's input (default: %(default)s)"
    )


def add_consume(commands: Commands) -> None:
    consume = commands.add_parser(
        "consume",
        help="read and print results, then throughput and latency",
        description="Read results from --topic and print each as a table row or a JSON "
        "line (id, outputs: top-k indices and probabilities or output shapes, model, "
        "timings). Stop after --count results, after --timeout seconds without a new "
        "message, or on Ctrl-C, then print a summary: count, throughput, percentiles of "
        "the worker's total_ms and, for requests sent by `produce`, end-to-end latency "
        "(on stderr with --format json). Messages that are not results are counted and "
        "skipped. Exits 1 if fewer than --count results arrived.",
    )
    consume.add_argument("--topic", required=True, help="result topic")
    add_settings(consume, CONNECTION_SETTINGS)
    consume.add_argument(
        "--group-id", help="consumer group (default: a new one; offsets are never committed)"
    )
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="read what is already in the topic (default: only results that arrive now)",
    )
    consume.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="one table row or one JSON line per result (default: %(default)s)",
    )
    consume.add_argument(
        "--count", type=positive, help="stop after this many results (default: no limit)"
    )
    consume.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="stop after this many seconds without a new message (default: %(default)s)",
    )


def add_retries(commands: Commands) -> None:
    retries = commands.add_parser(
        "retries",
        help="the retry tiers' relay: failed records back to the input when their delay passed",
        description="Read the retry tiers' topics (INPUT_TOPIC.retry.N, one per delay of "
        "--retry-delays-s, where workers send records whose model call failed) in the group "
        "GROUP_ID.retries, and send each record back to the input topic once its tier's delay "
        "has passed since it was written, with its key, value and headers and "
        "torchkafka.attempts; commits after the input topic acknowledged it. Run one or more "
        "beside the workers, with the same settings, file and environment variables as `run`. "
        "SIGTERM or Ctrl-C stops it.",
    )
    add_settings(retries, ["input_topic", "group_id", "retry_delays_s", *CONNECTION_SETTINGS])
