"""Rebalance pauses: the classic group protocol against KIP-848, with and without static membership.

For each variant (classic; classic with static membership; consumer, i.e.
KIP-848), in rounds: fresh 4-partition
topics, two `torchkafka run` processes (the tiny poison_sensitive_linear model,
`--metrics-port 0`) and a producer paced at --rate requests/s. Once results
come from both workers, two events on worker 0: a graceful restart (SIGTERM,
wait for the exit, start it again) and a kill -9 followed by a start; after
each, the next step waits until results come from both workers and no request
sent over 1 s ago is unanswered (at most --event-timeout-s), then --settle-s.
Per event, from the results topic (record timestamps, the result's worker):
  pause    the longest time a partition that had requests waiting produced no
           result (request timestamps from the input topic)
  back     from the event until results come again from both workers
  restart  from the event until the new process logged "consuming" (process
           start and model load: the floor of a static member's pause)
  dups     results beyond the first for an id; lost: ids with no result
  p99      end-to-end latency of the requests sent in the event's window
The "steady" row is the stretch before the first event, for comparison.
Prints a table and writes results.json and the worker logs to --out.
Needs the local Kafka (4.x) and Redis (`make up`).
Run: python bench/rebalance_bench.py [--rate 100] [--rounds 1] [--out DIR]
(about 6 minutes a round on the 2-core development machine); --summarize
measures a finished run's raw.json files again without running anything.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from e2e_harness import PARTITIONS, bench_topics, end_offset, log

from torchkafka.client import RequestSender
from torchkafka.codecs import decode_result
from torchkafka.codecs.testing import synthetic_input
from torchkafka.worker import kafka_bootstrap, redis_url
from torchkafka.worker.tools import RequestFactory

ROOT = Path(__file__).resolve().parents[1]
MODEL = "python:tests.support.worker_models:poison_sensitive_linear"
#: A classic static member's session timeout: long enough to cover a restart.
STATIC_SESSION_TIMEOUT_MS = 30_000
EVENTS = ("sigterm", "kill-9")


def wall_ms() -> float:
    """Now, in the clock of the records' timestamps."""
    return time.time() * 1000


@dataclass(frozen=True)
class Variant:
    label: str
    protocol: str  # classic | consumer
    static: bool

    def worker_args(self, run: str, slot: int) -> list[str]:
        """The `torchkafka run` flags of this variant for worker ``slot``."""
        args = ["--group-protocol", self.protocol]
        if self.static:
            args += ["--group-instance-id", f"{run}.w{slot}"]  # joins as ...w{slot}-0
            if self.protocol == "classic":  # KIP-848: the broker's 45 s applies
                args += ["--consumer-config", f"session.timeout.ms={STATIC_SESSION_TIMEOUT_MS}"]
        return args


VARIANTS = (
    Variant("classic", "classic", static=False),
    Variant("classic static", "classic", static=True),
    Variant("consumer", "consumer", static=False),
    # No "consumer static": the worker refuses it (a static member restarted after a crash
    # is refused its instance id until the broker's session timeout; measured here before).
)


class WorkerProcess:
    """One `torchkafka run` process in its own session, JSON logs to a file."""

    def __init__(self, log_path: Path, args: list[str]) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "torchkafka.worker.cli", "--log-format", "json", "run"]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.started_ms = wall_ms()
        with log_path.open("w") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 (our own command)
                [*command, *args],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path},  # the model is in tests.support
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.worker_id = f"{socket.gethostname()}/{self.process.pid}"  # as in its results
        self.signalled = False  # by this script (SIGTERM or SIGKILL)

    def terminate(self) -> None:
        """SIGTERM (once): the worker drains, commits and leaves."""
        if self.process.poll() is None and not self.signalled:
            self.process.send_signal(signal.SIGTERM)
            self.signalled = True

    def stop(self, timeout_s: float) -> int:
        """SIGTERM and its exit code; SIGKILL after ``timeout_s``."""
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL its process group, if still there."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.signalled = True
        self.process.wait(10)

    def events(self) -> list[dict[str, Any]]:
        """Its JSON log events, each with ``ms`` (wall clock) added."""
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
                event["ms"] = datetime.fromisoformat(event["timestamp"]).timestamp() * 1000
            except (ValueError, KeyError, TypeError):
                continue
            found.append(event)
        return found

    def first_event_ms(self, name: str) -> float | None:
        return next((e["ms"] for e in self.events() if e.get("event") == name), None)

    def exited_by_itself(self) -> str | None:
        """If it exited before this script signalled it: its exit code and last error line."""
        if self.signalled or self.process.poll() is None:
            return None
        errors = [e for e in self.events() if e.get("level") in {"error", "critical"}]
        last = errors[-1].get("event") if errors else "no error logged"
        return f"pid {self.process.pid} exited by itself, code {self.process.returncode}: {last}"


class PacedProducer(threading.Thread):
    """Sends requests {run}-0, {run}-1, ... at ``rate`` per second until ``stop()``."""

    def __init__(self, bootstrap: str, topic: str, run: str, rate: float) -> None:
        super().__init__(name="bench-producer", daemon=True)
        inputs = [synthetic_input((4,), "float32", seed) for seed in range(16)]
        self._factory = RequestFactory(run, inputs)
        self._sender = RequestSender(
            Producer({"bootstrap.servers": bootstrap, "linger.ms": 5}), topic
        )
        self._rate = rate
        self._stopping = threading.Event()
        self._errors: list[BaseException] = []
        self.sent = 0
        self._sent_ms: list[float] = []  # send time of request n
        self._run = run

    def run(self) -> None:
        try:
            start = time.monotonic()
            while not self._stopping.is_set():
                wait = start + self.sent / self._rate - time.monotonic()
                if wait > 0:
                    self._sender.poll(min(wait, 0.05))
                    continue
                self._sent_ms.append(wall_ms())
                request = self._factory(self.sent)
                self._sender.send(request)
                self.sent += 1
            stats = self._sender.flush()
            if stats.failed:
                raise RuntimeError(f"producing failed: {stats.errors}")
        except BaseException as exc:  # re-raised by stop()
            self._errors.append(exc)

    def caught_up(self, answered: set[str], sent_before_ms: float) -> bool:
        """Whether every request sent before ``sent_before_ms`` is in ``answered``."""
        count = bisect.bisect_left(self._sent_ms[: self.sent], sent_before_ms)
        return all(f"{self._run}-{n}" in answered for n in range(count))

    def halt(self) -> None:
        """Stop sending and wait for the deliveries, if not done yet."""
        self._stopping.set()
        if self.is_alive():
            self.join()

    def stop(self) -> int:
        """Stop sending; wait for the deliveries; the number sent."""
        self.halt()
        if self._errors:
            raise self._errors[0]
        return self.sent


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    worker: str
    ms: int  # the result record's timestamp


class ResultReader(threading.Thread):
    """Reads the results topic from its beginning (no group) until ``stop()``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="bench-results", daemon=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",  # never joined
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                for message in self._consumer.consume(500, timeout=0.2):
                    if message.error() is None:
                        result = decode_result(message.value() or b"")
                        answer = Answer(result.id, result.worker, message.timestamp()[1])
                        with self._lock:
                            self._answers.append(answer)
        finally:
            self._consumer.close()

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def answered(self) -> set[str]:
        return {a.id for a in self.answers()}

    def workers_since(self, ms: float) -> set[str]:
        return {a.worker for a in self.answers() if a.ms >= ms}

    def stop(self) -> list[Answer]:
        self._stopping.set()
        self.join()
        return self.answers()


def read_requests(bootstrap: str, topic: str) -> dict[str, tuple[int, int]]:
    """Every request on ``topic``: id -> (partition, record timestamp ms)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-requests", "enable.auto.commit": False}
    )
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(PARTITIONS)
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    sent: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 60
    try:
        while len(sent) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    sent[(message.key() or b"").decode()] = (
                        message.partition() or 0,
                        message.timestamp()[1],
                    )
    finally:
        consumer.close()
    return sent


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 0.2 s; whether it held within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def longest_stall(requests: Sequence[tuple[float, float]], start_ms: float, end_ms: float) -> float:
    """The longest time (ms) in which requests waited and none was answered, for one partition.

    ``requests`` are (sent, first answered; ``math.inf`` if never). Stalls ending
    at an answer within [start_ms, end_ms) count whole, even when they began
    earlier; one still open at ``end_ms`` counts up to it.
    """
    by_answer = sorted(requests, key=lambda r: r[1])
    earliest_waiting = [math.inf] * (len(by_answer) + 1)  # min sent among by_answer[i:]
    for i in range(len(by_answer) - 1, -1, -1):
        earliest_waiting[i] = min(by_answer[i][0], earliest_waiting[i + 1])
    longest, previous = 0.0, -math.inf
    for i, (_, answered) in enumerate(by_answer):
        if answered >= end_ms:  # waiting at the window's end?
            if earliest_waiting[i] < end_ms:
                longest = max(longest, end_ms - max(previous, earliest_waiting[i]))
            break
        if answered >= start_ms:
            longest = max(longest, answered - max(previous, earliest_waiting[i]))
        previous = answered
    return longest


@dataclass
class Window:
    """One row of the table: what happened from ``start_ms`` to ``end_ms``."""

    variant: str
    event: str
    start_ms: float
    end_ms: float
    pause_s: float = 0.0
    pause_partition: int = -1
    back_s: float | None = None
    restart_s: float | None = None
    duplicates: int = 0
    lost: int = 0
    p99_ms: float | None = None
    requests: int = 0


def measure(window: Window, sent: dict[str, tuple[int, int]], answers: Sequence[Answer]) -> Window:
    """Fill in ``window``'s pause, duplicates, lost ids and p99 latency."""
    first: dict[str, float] = {}
    for answer in sorted(answers, key=lambda a: a.ms):
        if answer.id in first:
            if window.start_ms <= answer.ms < window.end_ms:
                window.duplicates += 1
        else:
            first[answer.id] = answer.ms
    for partition in range(PARTITIONS):
        requests = [(ms, first.get(i, math.inf)) for i, (p, ms) in sent.items() if p == partition]
        stall = longest_stall(requests, window.start_ms, window.end_ms)
        if stall / 1000 > window.pause_s:
            window.pause_s, window.pause_partition = stall / 1000, partition
    in_window = [i for i, (_, ms) in sent.items() if window.start_ms <= ms < window.end_ms]
    window.requests = len(in_window)
    window.lost = sum(1 for i in in_window if i not in first)
    latencies = sorted(first[i] - sent[i][1] for i in in_window if i in first)
    if latencies:
        window.p99_ms = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    return window


def assignments(worker: WorkerProcess, since_ms: float) -> list[dict[str, Any]]:
    """``worker``'s assigned/revoked log events: seconds after ``since_ms``, partitions."""
    return [
        {
            "s": round((e["ms"] - since_ms) / 1000, 3),
            "event": e["event"],
            "partitions": [p for _, p in e.get("partitions", [])],
        }
        for e in worker.events()
        if e.get("event") in {"assigned", "revoked"}
    ]


def run_variant(
    variant: Variant, bootstrap: str, redis_address: str, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """Run the two events against one variant; what happened (``summarize`` measures it)."""
    run = f"torchkafka.rebalance.{uuid.uuid4().hex[:8]}"
    logs = out / variant.label.replace(" ", "-")
    logs.mkdir(parents=True, exist_ok=True)
    with bench_topics(bootstrap, redis_address, run) as topics:

        def start(slot: int, generation: int) -> WorkerProcess:
            return WorkerProcess(
                logs / f"worker{slot}-{generation}.log",
                [
                    *("--model", MODEL, "--device", "cpu", "--metrics-port", "0"),
                    *("--input-topic", topics.requests, "--output-topic", topics.results),
                    *("--dead-letter-topic", topics.dead_letters, "--group-id", run),
                    *("--bootstrap", bootstrap, "--redis-url", redis_address),
                    *variant.worker_args(run, slot),
                ],
            )

        reader = ResultReader(bootstrap, topics.results)
        reader.start()
        producer = PacedProducer(bootstrap, topics.requests, run, args.rate)
        producer.start()
        workers = [start(0, 0), start(1, 0)]
        everyone = list(workers)
        marks: list[tuple[str, float, float, int, WorkerProcess, WorkerProcess, bool]] = []
        notes: list[str] = []
        try:
            if not wait_until(
                lambda: reader.workers_since(0) >= {w.worker_id for w in workers},
                args.start_timeout_s,
            ):
                raise RuntimeError(f"{variant.label}: no results from both workers; see {logs}")
            steady_ms = wall_ms()
            time.sleep(args.steady_s)
            for generation, name in enumerate(EVENTS, start=1):
                old, survivor = workers
                at = wall_ms()
                log(f"  {variant.label}: {name} worker 0")
                if name == "sigterm":
                    code = old.stop(args.event_timeout_s)
                else:
                    old.kill()
                    code = old.process.returncode
                exited = wall_ms()
                new = start(0, generation)
                workers[0] = new
                everyone.append(new)
                ids = {new.worker_id, survivor.worker_id}
                back = wait_until(lambda: reader.workers_since(at) >= ids, args.event_timeout_s)  # noqa: B023
                if not back:
                    notes.append(f"{name}: not back to two workers in {args.event_timeout_s} s")
                if not wait_until(  # no partition still stalled
                    lambda: producer.caught_up(reader.answered(), wall_ms() - 1000),
                    args.event_timeout_s,
                ):
                    notes.append(f"{name}: requests still waiting after {args.event_timeout_s} s")
                time.sleep(args.settle_s)
                marks.append((name, at, exited, code, old, new, back))
            stop_ms = wall_ms()
            count = producer.stop()
            if not wait_until(lambda: len(reader.answered()) >= count, 60):
                notes.append("not every id answered within 60 s of the last send")
        finally:
            producer.halt()
            notes += [note for w in everyone if (note := w.exited_by_itself())]
            for w in workers:
                w.terminate()
            codes = [w.stop(30) for w in workers]
            for w in everyone:
                w.kill()
            answers = reader.stop()
        sent = read_requests(bootstrap, topics.requests)
        dead_letters = end_offset(bootstrap, topics.dead_letters)
    raw = {
        "variant": asdict(variant),
        "run": run,
        "logs": str(logs),
        "steady_ms": steady_ms,
        "stop_ms": stop_ms,
        "events": [
            {
                "event": name,
                "at_ms": at,
                "old_pid": old.process.pid,
                "old_exit_code": code,
                "old_exit_s": (exited - at) / 1000,
                "new_pid": new.process.pid,
                "new_worker": new.worker_id,
                "survivor_worker": workers[1].worker_id,
                "new_started_s": (new.started_ms - at) / 1000,
                "new_consuming_ms": new.first_event_ms("consuming"),
                "back_within_timeout": back,
                "assignments": {
                    f"{role} {w.process.pid}": assignments(w, at)
                    for role, w in (("old", old), ("new", new), ("survivor", workers[1]))
                },
            }
            for name, at, exited, code, old, new, back in marks
        ],
        "final_exit_codes": codes,
        "dead_letters": dead_letters,
        "notes": notes,
        "sent": sent,
        "answers": [asdict(a) for a in answers],
    }
    (logs / "raw.json").write_text(json.dumps(raw))  # summarize() can be run again on it
    return raw


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The windows (table rows) and totals of one ``run_variant``."""
    label = raw["variant"]["label"]
    sent: dict[str, tuple[int, int]] = {i: (p, ms) for i, (p, ms) in raw["sent"].items()}
    answers = [Answer(**a) for a in raw["answers"]]
    events = raw["events"]
    windows = [Window(label, "steady", raw["steady_ms"], events[0]["at_ms"])]
    for k, event in enumerate(events):
        at = event["at_ms"]
        # the last window runs until every request was answered (or it was left waiting)
        last_ms = max((a.ms + 1 for a in answers), default=raw["stop_ms"])
        end = events[k + 1]["at_ms"] if k + 1 < len(events) else max(raw["stop_ms"], last_ms)
        window = Window(label, event["event"], at, end)
        firsts = [
            min((a.ms for a in answers if a.ms >= at and a.worker == worker), default=math.inf)
            for worker in (event["new_worker"], event["survivor_worker"])
        ]
        if max(firsts) < math.inf:
            window.back_s = (max(firsts) - at) / 1000
        if event["new_consuming_ms"] is not None:
            window.restart_s = (event["new_consuming_ms"] - at) / 1000
        windows.append(window)
    for window in windows:
        measure(window, sent, answers)
    counts = Counter(a.id for a in answers)
    lost = sorted(set(sent) - set(counts))
    details = {k: v for k, v in raw.items() if k not in {"sent", "answers"}}
    return {
        **details,
        "windows": [asdict(w) for w in windows],
        "sent": len(sent),
        "results": len(answers),
        "duplicates": sum(n - 1 for n in counts.values()),
        "duplicate_ids": sorted(i for i, n in counts.items() if n > 1),
        "lost": len(lost),
        "lost_ids": lost[:100],
    }


def table(windows: Sequence[dict[str, Any]]) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"{'variant':<16}{'event':<9}{'pause s':>9}{'part':>5}{'back s':>8}{'restart s':>10}"
        f"{'dups':>6}{'lost':>6}{'p99 ms':>9}{'reqs':>6}"
    ]
    for w in windows:
        lines.append(
            f"{w['variant']:<16}{w['event']:<9}{w['pause_s']:>9.2f}{w['pause_partition']:>5}"
            f"{s(w['back_s']):>8}{s(w['restart_s']):>10}{w['duplicates']:>6}{w['lost']:>6}"
            f"{s(w['p99_ms']):>9}{w['requests']:>6}"
        )
    return "\n".join(lines)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen variant, ``args.rounds`` times, the order rotated each round."""
    by_name = {v.label.replace(" ", "-"): v for v in VARIANTS}
    chosen = [by_name[name] for name in args.variants.split(",")]
    bootstrap, redis_address = kafka_bootstrap(), redis_url()
    started = time.monotonic()
    runs = []
    for round_ in range(args.rounds):
        order = chosen[round_ % len(chosen) :] + chosen[: round_ % len(chosen)]
        for variant in order:
            log(f"round {round_ + 1}/{args.rounds}: {variant.label}")
            folder = args.out / f"round{round_ + 1}"
            runs.append(summarize(run_variant(variant, bootstrap, redis_address, args, folder)))
    return {
        "rate": args.rate,
        "rounds": args.rounds,
        "partitions": PARTITIONS,
        "static_session_timeout_ms": STATIC_SESSION_TIMEOUT_MS,
        "wall_s": time.monotonic() - started,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the variants")
    parser.add_argument(
        "--variants",
        default=",".join(v.label.replace(" ", "-") for v in VARIANTS),
        help="comma-separated subset, in this order each round (default: all)",
    )
    parser.add_argument("--steady-s", type=float, default=3, help="before the first event")
    parser.add_argument("--settle-s", type=float, default=3, help="after back to two workers")
    parser.add_argument("--start-timeout-s", type=float, default=180)
    parser.add_argument("--event-timeout-s", type=float, default=90)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp") / f"torchkafka-rebalance-{time.strftime('%Y%m%d-%H%M%S')}",  # noqa: S108
        help="folder for results.json and the worker logs",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="run nothing: measure again the raw.json files a run left under --out",
    )
    args = parser.parse_args()
    if args.summarize:
        previous = json.loads((args.out / "results.json").read_text())
        raws = sorted(args.out.glob("round*/*/raw.json"))
        runs = [summarize(json.loads(path.read_text())) for path in raws]
        report = {**previous, "runs": runs, "summarized_again": True}
    else:
        report = run_all(args)
        runs = report["runs"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    rate, rounds = report["rate"], report["rounds"]
    print(f"{rate:.0f} requests/s, {PARTITIONS} partitions, 2 workers, {rounds} round(s)")
    print(table([w for run in runs for w in run["windows"]]))
    for run in runs:
        problems = [*run["notes"]]
        if run["lost"]:
            problems.append(f"{run['lost']} ids lost: {run['lost_ids'][:5]}")
        if run["dead_letters"]:
            problems.append(f"{run['dead_letters']} dead letters")
        for problem in problems:
            print(f"{run['variant']['label']}: {problem}")
    print(f"results: {args.out / 'results.json'} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
