"""Per-message cost of dedup in Redis, for batch sizes 1, 32 and 256 side by side.

Each message on the happy path costs two DedupStore calls per poll batch:
claim (which also tells the ids already done) -> mark_done. For each batch
size, in interleaved rounds, fresh ids go through the two calls (about
``--messages`` ids per size and round) against REDIS_URL (default: the local
Redis); the table gives median µs per message for each call and their sum.
Keys live under a fresh namespace and are deleted at the end.
Run: python bench/dedup_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from torchkafka.worker import redis_url
from torchkafka.worker.pipeline import DedupStore, RetrySettings

BATCH_SIZES = (1, 32, 256)
CALLS = ("claim", "mark_done")


def measure(store: DedupStore, batch: int, messages: int) -> dict[str, float]:
    """µs per message for each call, over fresh ids in batches of ``batch``."""
    batches = [[str(uuid.uuid4()) for _ in range(batch)] for _ in range(max(1, messages // batch))]
    spent = dict.fromkeys(CALLS, 0.0)
    for ids in batches:
        start = time.perf_counter()
        store.claim(ids, "bench-owner", 1)
        claimed = time.perf_counter()
        store.mark_done(ids, "bench-owner", 1)
        end = time.perf_counter()
        spent["claim"] += claimed - start
        spent["mark_done"] += end - claimed
    count = len(batches) * batch
    return {name: seconds / count * 1e6 for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--messages", type=int, default=4096, help="ids per size and round")
    args = parser.parse_args()
    url = redis_url()
    client = redis.Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    namespace = f"torchkafka-bench:{uuid.uuid4().hex}"
    store = DedupStore(client, namespace, 600, 10_000, RetrySettings())
    try:
        store.ping()
        store.check_state(pipeline_has_history=lambda: False)  # a new namespace
        measure(store, 32, 256)  # connect and load the scripts
        costs: dict[int, list[dict[str, float]]] = {batch: [] for batch in BATCH_SIZES}
        for _ in range(args.rounds):
            for batch in BATCH_SIZES:
                costs[batch].append(measure(store, batch, args.messages))
        version = client.info("server")["redis_version"]
        print(f"Redis {version} at {url}; median of {args.rounds} rounds, µs per message")
        print(f"{'batch':>6}" + "".join(f"{name:>13}" for name in CALLS) + f"{'total':>13}")
        for batch in BATCH_SIZES:
            med = {name: statistics.median(r[name] for r in costs[batch]) for name in CALLS}
            cells = "".join(f"{med[name]:>13.2f}" for name in CALLS)
            print(f"{batch:>6}{cells}{sum(med.values()):>13.2f}")
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
        client.close()


if __name__ == "__main__":
    main()
