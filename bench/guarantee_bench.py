"""What exactly-once costs: one worker's throughput in each mode, side by side in one run.

The tiny MLP case of worker_bench.py (float32[64], batch 32): requests are
pre-produced to a fresh topic and one worker drains them, at-least-once and
exactly-once (a Kafka transaction every ``transaction_ms``) in turns, ``--rounds``
times each, so that the machine's drift hits both. Throughput runs from the
first result to the last by the results' own timestamps; exactly-once results
are read with read_committed, so only committed ones count. Prints msg/s per
round, the medians and their ratio. Needs the local Kafka and Redis (`make up`).
Run: python bench/guarantee_bench.py [--count N] [--rounds N] [--transaction-ms MS]
"""

from __future__ import annotations

import argparse
import statistics

from e2e_harness import log
from worker_bench import TINY, end_to_end_rate

from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.ops import configure_logging

MODES = ("at-least-once", "exactly-once")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode")
    parser.add_argument("--transaction-ms", type=int, default=100, help="exactly-once interval")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES:
            log(f"round {round_ + 1}: {mode}, {args.count} requests")
            settings = {"processing_guarantee": mode, "transaction_ms": args.transaction_ms}
            rates[mode].append(
                end_to_end_rate(TINY, bootstrap, redis_address, args.count, **settings)
            )
    print(
        f"{TINY.label}, batch 32, {args.count} requests a round, transactions every "
        f"{args.transaction_ms} ms"
    )
    print(f"{'mode':<16}{'msg/s per round':>32}{'median':>10}")
    for mode in MODES:
        each = " ".join(f"{rate:.0f}" for rate in rates[mode])
        print(f"{mode:<16}{each:>32}{statistics.median(rates[mode]):>10.0f}")
    ratio = statistics.median(rates["exactly-once"]) / statistics.median(rates["at-least-once"])
    print(f"exactly-once / at-least-once: {ratio:.3f}")


if __name__ == "__main__":
    main()
