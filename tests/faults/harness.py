"""One fault scenario: its topics and group on the cluster, its own Redis, its worker
processes, its stream, and at the end the check of what came out."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.faults.cluster import (
    BOOTSTRAP,
    PARTITIONS,
    create_topics,
    tool_says_committed_at_end,
)
from tests.faults.report import Kill, Row, claims_lost_note, evaluate, kill_notes
from tests.faults.stream import Answer, Stream, TopicTail
from tests.faults.workers import MODEL, FaultWorker, event_time
from tests.integration.helpers import PrivateRedis, committed_equals_end
from tests.integration.streams import wait_until
from torchkafka.topology import delete_topics

#: From the stream going idle (every delivery report in) until the group's commits
#: must equal the end offsets: a killed worker's session (6 s) and claims (6 s)
#: expire, its partitions move, the backlog is worked off.
COMMIT_DEADLINE_S = 60.0
#: A second result counts as the documented kill window's (produce call to done-mark)
#: when its first copy was published by the killed worker at most this long before the
#: kill. docs/worker.md measured all within 250 ms on one broker with the CPU
#: saturated; with three brokers replicating (acks=all) on the same 2 cores the suite
#: saw up to 0.5 s. Other causes of a second result would not sit right before a kill.
KILL_WINDOW_S = 2.0
#: How long a worker may take to start and join its group.
START_S = 90.0
#: The worker's log event for claims found gone when renewed.
CLAIMS_LOST = "claims lost while running: another worker may run these ids too"


def _gone(pid: int) -> bool:
    """Whether process ``pid`` ended (a zombie, or reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _utc(seconds: float) -> str:
    """A wall-clock time as the worker logs write it (UTC, ISO 8601)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class Scenario:
    """A fault scenario's resources; ``finish`` checks the promise and adds its table row."""

    def __init__(self, name: str, admin: AdminClient, run_dir: Path, rows: list[Row]) -> None:
        self.name = name
        self._admin, self._rows, self._run_dir = admin, rows, run_dir
        prefix = f"faults-{''.join(c if c.isalnum() else '-' for c in name)}-{uuid.uuid4().hex[:6]}"
        self.group = prefix
        self.topics = create_topics(admin, prefix)
        self.redis = PrivateRedis(run_dir / "redis")
        self.redis.start()
        self.workers: list[FaultWorker] = []
        self.kills: list[Kill] = []
        self.results = TopicTail(BOOTSTRAP, self.topics.output, PARTITIONS).follow()
        self.violations: list[str] = []
        self.passed = False
        self.balanced_at: float | None = None  # wall clock, seconds

    # --- workers ---------------------------------------------------------------------

    def spawn(self, *extra: str) -> FaultWorker:
        """Start a worker of this scenario's group; flags in ``extra`` win over the defaults."""
        name = f"worker-{len(self.workers)}"
        args = [
            "--model", MODEL, "--device", "cpu", "--group-id", self.group,
            "--input-topic", self.topics.input, "--output-topic", self.topics.output,
            "--dead-letter-topic", self.topics.dead_letters,
            "--bootstrap", BOOTSTRAP, "--redis-url", self.redis.url, "--metrics-port", "0",
            # A dead worker's partitions and claims move on within seconds.
            "--claim-ttl-ms", "6000",
            "--consumer-config", "session.timeout.ms=6000",
            "--consumer-config", "heartbeat.interval.ms=1000",
            *extra,
        ]  # fmt: skip
        worker = FaultWorker(name, self._run_dir / f"{name}.log", args)
        self.workers.append(worker)
        return worker

    def spawn_joined(self, count: int, *extra: str) -> list[FaultWorker]:
        """Start ``count`` workers; wait until each holds partitions of a stable group."""
        return self.spawn_slots(count, lambda _slot: self.spawn(*extra))

    def spawn_slots(self, count: int, start: Callable[[int], FaultWorker]) -> list[FaultWorker]:
        """Start ``count`` workers with ``start(slot)``; wait until each holds partitions of a
        stable group."""
        workers = [start(slot) for slot in range(count)]
        for worker in workers:
            self.wait_joined(worker)
        self.wait_balanced()
        return workers

    def kill_in_turns(
        self,
        stream: Stream,
        workers: list[FaultWorker],
        kills: int,
        restart: Callable[[int], FaultWorker],
    ) -> None:
        """While ``stream`` runs, SIGKILL ``kills`` answering workers in turn, evenly spread
        over the stream; each is replaced by ``restart(slot)``."""
        with stream.held():
            for k in range(kills):
                stream.wait_sent((k + 1) / (kills + 2))
                slot = k % len(workers)
                self.wait_answering(workers[slot])
                self.kill(workers[slot])
                workers[slot] = restart(slot)

    def wait_balanced(self) -> None:
        """Wait until the group is stable, each running worker holding input partitions."""
        wait_until(self._balanced, START_S, "a stable group, every worker with partitions")
        if self.balanced_at is None:
            self.balanced_at = time.time()

    def _balanced(self) -> bool:
        group = self._admin.describe_consumer_groups([self.group])[self.group].result(timeout=10)
        held = [
            {tp.partition for tp in m.assignment.topic_partitions if tp.topic == self.topics.input}
            for m in group.members
        ]
        return (
            group.state.name == "STABLE"
            and len(held) == len(self.running())
            and all(held)
            and set().union(*held) == set(range(PARTITIONS))
        )

    def revocations(self) -> int:
        """Revocations the workers logged since the group first balanced, their own
        shutdown's aside."""
        since = self.balanced_at or 0.0
        revoked = 0
        for worker in self.workers:
            for event in worker.log_events():
                if event.get("event") == "shutting down":
                    break
                revoked += event.get("event") == "revoked" and event_time(event) > since
        return revoked

    def wait_joined(self, worker: FaultWorker) -> None:
        worker.wait_for_event("assigned", START_S)

    def wait_answering(self, worker: FaultWorker, timeout_s: float = 60) -> None:
        """Wait until results from ``worker`` arrive."""
        wait_until(
            lambda: self.results.by(worker.worker_id) > 0,
            timeout_s,
            f"results from {worker.name}",
            worker.describe,
        )

    def kill(self, worker: FaultWorker) -> None:
        """SIGKILL ``worker``, remembered to attribute duplicates."""
        worker.crash()
        assert worker.killed_at is not None
        self.kills.append(Kill(worker.worker_id, int(worker.killed_at * 1000)))

    def stop(self, worker: FaultWorker) -> int:
        """SIGTERM ``worker``; a non-zero exit code is a violation."""
        code = worker.stop()
        if code != 0:
            self.violations.append(f"{worker.name} exited {code} on SIGTERM\n{worker.describe()}")
        return code

    def running(self) -> list[FaultWorker]:
        return [w for w in self.workers if w.killed_at is None and w.exit_code is None]

    # --- the stream --------------------------------------------------------------------

    def stream(
        self, count: int, rate: float, partitions: Callable[[int], list[int]] | None = None
    ) -> Stream:
        """Start producing ``count`` requests at ``rate`` per second (see ``Stream``)."""
        return Stream(BOOTSTRAP, self.topics.input, count, rate, partitions=partitions).start()

    # --- redis -------------------------------------------------------------------------

    def _redis_pid(self) -> int:
        return int((self._run_dir / "redis" / "redis" / "redis.pid").read_text())

    def crash_redis(self, lose_data: bool = False) -> None:
        """SIGKILL the scenario's Redis; with ``lose_data`` its append-only file goes too."""
        pid = self._redis_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _gone(pid), 10, f"redis (pid {pid}) to die")
        if lose_data:
            self.redis.stop(clean=True)

    def pause_redis(self, seconds: float) -> None:
        """SIGSTOP the scenario's Redis for ``seconds``, then SIGCONT."""
        pid = self._redis_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    # --- the end -----------------------------------------------------------------------

    def expect(self, ok: bool, violation: str) -> None:
        """A scenario's own check: ``violation`` fails it (at ``finish``) unless ``ok``."""
        if not ok:
            self.violations.append(violation)

    def finish(
        self,
        stream: Stream,
        resent: frozenset[str] = frozenset(),
        notes: str = "",
        observe: Callable[[], tuple[str, list[str]]] | None = None,
        exactly_once: bool = False,
    ) -> Row:
        """Wait for commits at the end, SIGTERM the workers, read both topics, check, report.

        ``resent``: ids sent again, which may have a second result. ``observe``,
        called once the workers stopped: a note for the table and violations.
        ``exactly_once``: a second result is a violation whatever the kills.
        """
        idle_at = stream.finish()
        committed_s = self._wait_committed_at_end(idle_at)
        for worker in self.running():
            if not worker.alive():
                self.violations.append(f"{worker.name} exited by itself\n{worker.describe()}")
        for worker in self.running():
            self.stop(worker)
        results = self.results.read_to_end()
        dead = TopicTail(BOOTSTRAP, self.topics.dead_letters, 1, dead_letters=True).read_to_end()
        window_s = 0.0 if exactly_once else KILL_WINDOW_S  # no second result explained
        row, violations = evaluate(self.name, stream, results, dead, self.kills, resent, window_s)
        row.committed_s = committed_s
        row.exits = [w.exit_code for w in self.workers if w.exit_code is not None]
        observed, observed_violations = observe() if observe else ("", [])
        anyway = self._observed_anyway(stream, results)
        row.notes = "; ".join(filter(None, [notes, observed, *anyway]))
        row.violations = self.violations + violations + observed_violations
        self._rows.append(row)
        assert not row.violations, self.describe(row)
        self.passed = True
        return row

    def _observed_anyway(self, stream: Stream, results: list[Answer]) -> list[str]:
        """Notes every scenario gets: its kills, delivery errors, the claims workers lost."""
        lost = [(w.worker_id, e) for w in self.workers for e in w.events(CLAIMS_LOST)]
        return [
            kill_notes(self.kills) if self.kills else "",
            f"producer delivery errors: {dict(stream.failed)}" if stream.failed else "",
            claims_lost_note(lost, results),
        ]

    def _wait_committed_at_end(self, idle_at: float) -> float | None:
        """Seconds from ``idle_at`` until the commits equal the end offsets (checked with
        the client, then confirmed by the consumer-groups tool); None: not within
        COMMIT_DEADLINE_S (a violation)."""
        group, topic = self.group, self.topics.input
        while time.monotonic() < idle_at + COMMIT_DEADLINE_S:
            if committed_equals_end(BOOTSTRAP, group, topic, PARTITIONS):
                seen_s = time.monotonic() - idle_at
                if tool_says_committed_at_end(group, topic):
                    return seen_s
            time.sleep(0.5)
        self.violations.append(
            f"commits not at the end {COMMIT_DEADLINE_S} s after the stream went idle"
        )
        return None

    def describe(self, row: Row) -> str:
        """The violations, the kills, then each worker's log tail."""
        kills = [f"{k.worker} SIGKILLed at {_utc(k.at_ms / 1000)}" for k in self.kills]
        tails = [w.describe() for w in self.workers]
        return "\n".join([f"{self.name}:", *row.violations, *kills, *tails])

    def close(self) -> None:
        """Reap workers, stop Redis (data gone); the topics go if the scenario passed."""
        for worker in self.workers:
            worker.reap()
        self.results.close()
        self.redis.stop(clean=True)
        if self.passed:
            delete_topics(self._admin, self.topics.names)
