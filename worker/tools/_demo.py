"""`torchkafka demo`: the whole job on the local services, verified and summarised.

Creates the demo topics, starts a group of worker processes (`torchkafka run
--workers N`), produces synthetic images (plus a few malformed messages and
re-submitted ids), reads the results and dead letters back, checks that every
valid input got exactly one result and every bad one a dead letter with its
reason, prints a summary, and stops the workers it started.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from confluent_kafka import Producer
from tqdm import tqdm

from torchkafka.client import RequestSender, join_group, result_consumer
from torchkafka.codecs import decode_result, read_dead_letter_info
from torchkafka.codecs.testing import MalformedCase, malformed_corpus
from torchkafka.topology import admin_client, ensure_topics, worker_topics
from torchkafka.worker.tools._consume import ResultStats, format_percentiles
from torchkafka.worker.tools._produce import RequestFactory

TOPIC_PREFIX = "torchkafka.demo"
#: Bad inputs the demo sends (from the codecs' corpus), one per kind of failure.
DEMO_MALFORMED = frozenset(
    {"truncated", "unknown dtype", "negative dimension", "wrong byte count", "id too long"}
)
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What the demo runs."""

    bootstrap: str
    redis_url: str
    count: int = 3000
    workers: int = 2
    model: str = "torchvision:resnet18"
    shape: tuple[int, ...] = (3, 64, 64)
    log_dir: Path = Path(".run/demo")
    timeout_s: float = 300.0


@dataclass(slots=True)
class DemoReport:
    """What came back, and whether it is exactly what should have."""

    sent: int
    #: The keys of the malformed inputs sent.
    malformed: frozenset[str]
    duplicates_sent: int
    results: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    #: Dead letters by the key of their input.
    dead_lettered: Counter[str] = field(default_factory=Counter)
    stats: ResultStats = field(default_factory=ResultStats)
    elapsed_s: float = 0.0

    @property
    def missing(self) -> int:
        """Valid inputs without a result."""
        return self.sent - len(self.results)

    @property
    def duplicated(self) -> int:
        """Results beyond the first for an id."""
        return sum(count - 1 for count in self.results.values())

    @property
    def repeated_dead_letters(self) -> int:
        """Dead letters beyond the first for an input.

        Dead letters are at least once: a record read again before its offset
        was committed (after a rebalance, say) is dead-lettered again.
        """
        return sum(count - 1 for count in self.dead_lettered.values())

    @property
    def ok(self) -> bool:
        """One result per valid input; every malformed one dead-lettered, and nothing else."""
        return (
            self.missing == 0
            and self.duplicated == 0
            and self.dead_lettered.keys() == self.malformed
        )


def run_demo(settings: DemoSettings) -> DemoReport:
    """Run the demo end to end; the workers are stopped before this returns."""
    run_id = uuid.uuid4().hex[:8]
    topics = {name: f"{TOPIC_PREFIX}.{name}" for name in ("requests", "results", "dead-letters")}
    ensure_topics(
        admin_client(settings.bootstrap),
        worker_topics(topics["requests"], topics["results"], topics["dead-letters"], PARTITIONS),
    )
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"workers-{run_id}.log"
    print(f"starting {settings.workers} workers ({settings.model}); logs: {log_path}")
    with log_path.open("a") as log_file:  # append: the workers write lines concurrently
        workers = subprocess.Popen(  # noqa: S603 - our own CLI, our own arguments
            [
                sys.executable, "-m", "torchkafka.worker.cli", "--log-format", "json",
                "run", "--workers", str(settings.workers), "--model", settings.model,
                "--preprocess", "imagenet", "--postprocess", "topk:5", "--device", "cpu",
                "--input-topic", topics["requests"], "--output-topic", topics["results"],
                "--dead-letter-topic", topics["dead-letters"], "--group-id", "torchkafka-demo",
                "--metrics-port", "0",
                "--bootstrap", settings.bootstrap, "--redis-url", settings.redis_url,
                # Each run sends new ids: marks a Redis lost since an earlier run are no loss.
                "--redis-state-loss", "continue",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            return _produce_and_verify(settings, topics, run_id)
        finally:
            workers.send_signal(signal.SIGTERM)
            try:
                workers.wait(timeout=90)
            except subprocess.TimeoutExpired:
                workers.kill()


def _produce_and_verify(settings: DemoSettings, topics: dict[str, str], run_id: str) -> DemoReport:
    malformed = [case for case in malformed_corpus() if case.name in DEMO_MALFORMED]
    duplicates = max(1, settings.count // 100)
    keys = frozenset(_malformed_key(run_id, index) for index in range(len(malformed)))
    report = DemoReport(settings.count, keys, duplicates)
    reader = result_consumer(
        {"bootstrap.servers": settings.bootstrap}, f"torchkafka-demo-reader-{run_id}"
    )
    join_group(reader, [topics["results"], topics["dead-letters"]], 30)  # before producing
    started = time.monotonic()
    _produce(settings, topics["requests"], run_id, malformed, duplicates)
    bar = tqdm(total=settings.count, desc="results", unit="msg")
    deadline = started + settings.timeout_s
    try:
        while time.monotonic() < deadline and (
            len(report.results) < settings.count or len(report.dead_lettered) < len(keys)
        ):
            for message in reader.consume(500, timeout=0.5):
                if message.error() is not None:
                    continue
                if message.topic() == topics["dead-letters"]:
                    headers = message.headers()
                    key = (message.key() or b"").decode()
                    if isinstance(headers, list) and key.startswith(run_id):
                        report.dead_letter_reasons[read_dead_letter_info(headers).reason] += 1
                        report.dead_lettered[key] += 1
                    continue
                result = decode_result(message.value() or b"")
                if not result.id.startswith(run_id):
                    continue
                if result.id not in report.results:
                    bar.update(1)
                report.results[result.id] += 1
                report.stats.add(result, time.monotonic(), time.time() * 1000)
        time.sleep(2)  # a duplicate result, if there were one, would arrive by now
        for message in reader.consume(500, timeout=1.0):
            if message.error() is None and message.topic() == topics["results"]:
                result = decode_result(message.value() or b"")
                if result.id.startswith(run_id):
                    report.results[result.id] += 1
    finally:
        bar.close()
        reader.close()
    report.elapsed_s = time.monotonic() - started
    return report


def _produce(
    settings: DemoSettings,
    topic: str,
    run_id: str,
    malformed: list[MalformedCase],
    duplicates: int,
) -> None:
    sender = RequestSender(
        Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5}), topic
    )
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, settings.shape, dtype=torch.uint8, generator=generator)
    factory = RequestFactory(run_id, [image])
    total = settings.count + duplicates + len(malformed)
    with tqdm(total=total, desc="requests", unit="msg") as bar:
        for index in list(range(settings.count)) + list(range(duplicates)):
            sender.send(factory(index))
            bar.update(1)
        for index, case in enumerate(malformed):
            sender.send_encoded(_malformed_key(run_id, index).encode(), case.data)
            bar.update(1)
        sender.flush(30)


def _malformed_key(run_id: str, index: int) -> str:
    return f"{run_id}-bad-{index}"


def print_report(report: DemoReport) -> None:
    """The summary table."""
    rate = len(report.results) / report.elapsed_s if report.elapsed_s else 0.0
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(report.dead_letter_reasons.items()))
    print()
    print(
        f"  inputs sent              {report.sent} (+{report.duplicates_sent} re-submitted ids, "
        f"+{len(report.malformed)} malformed)"
    )
    print(
        f"  results                  {len(report.results)} unique, {report.duplicated} duplicated, "
        f"{report.missing} missing"
    )
    repeated = report.repeated_dead_letters
    again = f", {repeated} of them again for an input read again" if repeated else ""
    print(
        f"  dead letters             {sum(report.dead_letter_reasons.values())} ({reasons}{again})"
    )
    print(f"  throughput               {rate:.0f} results/s over {report.elapsed_s:.1f} s")
    print(f"  end-to-end latency (ms)  {format_percentiles(report.stats.end_to_end_ms, 0)}")
    infer_ms = report.stats.timings_ms.get("infer_ms")
    if infer_ms:
        print(f"  model time per batch     mean {statistics.fmean(infer_ms):.1f} ms")
    verdict = "OK: exactly one result per input, bad inputs dead-lettered"
    print(f"  verdict                  {verdict if report.ok else 'FAILED'}")
