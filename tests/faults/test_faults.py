"""The fault suite: worker processes against the 3-node cluster (RF 3, min ISR 2) and a
private Redis, one fault per test, mid-stream.

Each scenario counts the ids the producer got acknowledged, waits for the
group's commits to reach the end offsets (confirmed with Kafka's consumer-groups
tool), stops the workers with SIGTERM, reads the output and dead-letter topics to
the end and checks docs/worker.md's promise: nothing acknowledged is lost, every
id gets one result (a second one only where a SIGKILL or an accepted Redis loss
explains it), every SIGTERM exits 0. The table at the end of the run has a row per
scenario (tests/faults/report.py). Faults run inside ``stream.held()``: the stream
goes on until they are over, however slow the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from tests.faults.cluster import BOOTSTRAP, PARTITIONS, crash_node, restart_crashed
from tests.faults.harness import Scenario
from tests.faults.stream import TopicTail
from tests.faults.workers import FaultWorker
from tests.integration.helpers import run_cli
from tests.integration.streams import wait_until

#: The main scenario: 20,000 ids through 3 workers, 5 of them SIGKILLed on the way.
KILL_IDS, KILL_RATE, KILLS = 20_000, 400, 5
#: The other scenarios' streams: ids and requests per second.
IDS, RATE = 3_000, 150
#: The exactly-once scenario: ids, requests per second, kills.
EOS_IDS, EOS_RATE, EOS_KILLS = 6_000, 300, 3

OpenScenario = Callable[[str], Scenario]


def test_kill_9_of_a_worker_five_times(open_scenario: OpenScenario) -> None:
    """Workers SIGKILLed at work and restarted; duplicates only within the kill window."""
    scenario = open_scenario(f"kill -9 x{KILLS}")
    workers = scenario.spawn_joined(3)
    stream = scenario.stream(KILL_IDS, KILL_RATE)
    scenario.kill_in_turns(stream, workers, KILLS, lambda _slot: scenario.spawn())
    scenario.finish(stream)


def test_kill_9_of_an_exactly_once_worker(open_scenario: OpenScenario) -> None:
    """Exactly-once workers SIGKILLed mid-transaction and restarted with their transactional
    ids: a read_committed reader sees each id once, however the kills fall."""
    scenario = open_scenario(f"exactly-once, kill -9 x{EOS_KILLS}")

    def start(slot: int) -> FaultWorker:
        return scenario.spawn(
            "--processing-guarantee", "exactly-once",
            "--transactional-id", f"{scenario.group}-{slot}",
        )  # fmt: skip

    workers = scenario.spawn_slots(3, start)
    stream = scenario.stream(EOS_IDS, EOS_RATE)
    scenario.kill_in_turns(stream, workers, EOS_KILLS, start)

    def aborted_copies() -> tuple[str, list[str]]:
        """What the kills threw away: results a read_uncommitted reader sees twice."""
        output = scenario.topics.output
        tail = TopicTail(BOOTSTRAP, output, PARTITIONS, isolation="read_uncommitted")
        everything = tail.read_to_end()
        aborted = len(everything) - len({a.id for a in everything})
        return f"results in aborted transactions (read_uncommitted): {aborted}", []

    scenario.finish(stream, exactly_once=True, observe=aborted_copies)


def nothing_moved(scenario: Scenario) -> tuple[str, list[str]]:
    revoked = scenario.revocations()
    violations = [f"partitions revoked {revoked} times while the workers ran"] if revoked else []
    return f"revocations while running: {revoked}", violations


def test_sigterm_rolling_restart(open_scenario: OpenScenario) -> None:
    """Static members restarted one by one within the session timeout: nothing moves."""
    scenario = open_scenario("SIGTERM rolling restart")

    def start(slot: int) -> FaultWorker:
        return scenario.spawn(
            "--group-instance-id", f"{scenario.group}-{slot}",
            "--consumer-config", "session.timeout.ms=30000",
        )  # fmt: skip

    workers = scenario.spawn_slots(2, start)
    stream = scenario.stream(IDS, RATE)
    with stream.held():
        for slot in range(2):
            stream.wait_sent((slot + 1) / 3)
            scenario.wait_answering(workers[slot])
            scenario.stop(workers[slot])
            workers[slot] = start(slot)
            scenario.wait_answering(workers[slot])
    scenario.finish(stream, observe=lambda: nothing_moved(scenario))


def coordinator(admin: AdminClient, group: str) -> int:
    """The node id of ``group``'s coordinator."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return int(description.coordinator.id)


def test_a_broker_killed_and_restarted(open_scenario: OpenScenario, cluster: AdminClient) -> None:
    """The group's coordinator (and leader of some partitions) SIGKILLed, then restarted."""
    scenario = open_scenario("broker kill -9 + restart")
    scenario.spawn_joined(2)
    stream = scenario.stream(4_000, 200)
    with stream.held():
        stream.wait_sent(0.25)
        node = coordinator(cluster, scenario.group)
        crash_node(node)
        down_at = time.monotonic()
        time.sleep(3)
        restart_crashed()
        down_s = time.monotonic() - down_at
    scenario.finish(stream, notes=f"node {node} (coordinator) down {down_s:.0f} s")


def test_redis_killed_and_restarted_with_its_data(open_scenario: OpenScenario) -> None:
    """Redis SIGKILLed, back 2 s later from its append-only file (fsynced every second)."""
    scenario = open_scenario("redis kill -9, restarted with data")
    scenario.spawn_joined(2)
    stream = scenario.stream(IDS, RATE)
    with stream.held():
        stream.wait_sent(0.3)
        scenario.crash_redis()
        time.sleep(2)
        scenario.redis.start()
    scenario.finish(stream, notes="redis away 2 s")


def all_logged(workers: list[FaultWorker], prefix: str) -> Callable[[], bool]:
    """Whether each of ``workers`` logged an event starting with ``prefix``."""
    return lambda: all(
        any(e.get("event", "").startswith(prefix) for e in w.log_events()) for w in workers
    )


def test_redis_killed_and_restarted_empty(open_scenario: OpenScenario) -> None:
    """Redis SIGKILLed and back without its data: the workers hold their work until
    `torchkafka dedup accept-loss`; then ids answered before the loss and sent again may
    get a second result, once."""
    scenario = open_scenario("redis kill -9, restarted empty")
    workers = scenario.spawn_joined(2)
    stream = scenario.stream(IDS, RATE)
    with stream.held():
        stream.wait_sent(0.3)
        answered_before = {a.id for a in list(scenario.results.answers)}
        scenario.crash_redis(lose_data=True)
        scenario.redis.start()
        wait_until(all_logged(workers, "redis lost its done-marks"), 30, "the workers to see it")
        time.sleep(2)  # batches already running finish
        held = len(scenario.results.answers)
        time.sleep(3)
        during_hold = len(scenario.results.answers) - held
        scenario.expect(during_hold == 0, f"{during_hold} results published while holding")
        accepted = run_cli(
            "dedup", "accept-loss", "--output-topic", scenario.topics.output,
            "--redis-url", scenario.redis.url,
        )  # fmt: skip
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    stream.finish()
    resent = sorted(answered_before)[:200]
    stream.resend([int(i.rsplit("-", 1)[1]) for i in resent])
    scenario.finish(
        stream,
        resent=frozenset(resent),
        notes=f"held 5 s until accept-loss; {len(resent)} ids answered before the loss re-sent",
    )


def test_redis_paused(open_scenario: OpenScenario) -> None:
    scenario = open_scenario("redis SIGSTOP 6 s")
    scenario.spawn_joined(2)
    stream = scenario.stream(IDS, RATE)
    with stream.held():
        stream.wait_sent(0.3)
        scenario.pause_redis(6)
    scenario.finish(stream)


def test_a_worker_added_and_one_removed(open_scenario: OpenScenario) -> None:
    scenario = open_scenario("worker added, one removed")
    first, _ = scenario.spawn_joined(2)
    stream = scenario.stream(IDS, RATE)
    with stream.held():
        stream.wait_sent(0.25)
        third = scenario.spawn()
        scenario.wait_answering(third)
        stream.wait_sent(0.6)
        scenario.stop(first)
        after = len(scenario.results.answers)
        wait_until(lambda: len(scenario.results.answers) > after + 100, 60, "more results")
    scenario.finish(stream, notes="2 -> 3 -> 2 workers")


def test_a_model_slower_than_max_poll_interval(open_scenario: OpenScenario) -> None:
    """Batches of 7 s under max.poll.interval.ms = 6 s: the workers stay in the group."""
    scenario = open_scenario("model slower than max.poll")
    scenario.spawn_joined(
        2,
        "--model", "python:tests.faults.models:slower_than_poll_interval",
        "--max-batch-size", "8", "--max-wait-ms", "1000",
        "--consumer-config", "max.poll.interval.ms=6000",
    )  # fmt: skip
    stream = scenario.stream(4 * 8, 1000)  # two batches a worker

    def stayed_in_the_group() -> tuple[str, list[str]]:
        note, violations = nothing_moved(scenario)
        events = [e.get("event", "") for w in scenario.workers for e in w.log_events()]
        exceeded = [e for e in events if "MAXPOLL" in e or "max.poll.interval" in e]
        return note, violations + exceeded

    scenario.finish(
        stream, notes="7 s batches, max.poll.interval.ms 6000", observe=stayed_in_the_group
    )


def test_duplicate_ids_on_different_partitions(open_scenario: OpenScenario) -> None:
    """Each id sent twice, at once, to two partitions (two workers): one result each."""
    scenario = open_scenario("same id on 2 partitions")
    scenario.spawn_joined(2)
    stream = scenario.stream(
        4_000, 2_000, partitions=lambda n: [n % PARTITIONS, (n + 1 + n % 5) % PARTITIONS]
    )
    scenario.finish(stream, notes="8000 messages, each id on two partitions")
