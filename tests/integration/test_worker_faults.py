"""The worker under faults: Redis restarted mid-stream, SIGTERM mid-stream (also while
Redis is away), fail-open, two workers, rebalances mid-stream, ids re-submitted while
their first copy is still being processed, and batches that outlast the claim lease.

Each test has its own topics and consumer group and checks the delivery
promise of docs/worker.md: every request id gets exactly one result, the
committed offsets reach the end of the input, and nothing is dead-lettered.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from structlog.testing import capture_logs

from tests.integration.helpers import (
    PrivateRedis,
    RunningWorker,
    Topics,
    committed_equals_end,
    config_for,
    free_port,
    produce,
    request_value,
    run_cli,
)
from tests.integration.streams import (
    PARTITIONS,
    ROOT,
    SETTLE_S,
    SLOW_MODEL,
    PacedProducer,
    TopicReader,
    WorkerProcess,
    assert_no_id_answered_twice,
    assignments,
    readiness,
    requests,
    wait_until,
)
from torchkafka.codecs import decode_result
from torchkafka.worker import app

DEPLOY = ROOT / "deploy" / "local"
VERY_SLOW_MODEL = "python:tests.support.worker_models:very_slow_linear"
#: How long Redis stays away: longer than the worker's retries of one call.
OUTAGE_S = 4.0


def wait_for_commits_at_end(
    bootstrap: str, group: str, topic: str, details: Callable[[], str] = str
) -> None:
    """Wait (30 s at most) until ``group``'s commits on ``topic`` equal its end offsets."""
    wait_until(
        lambda: committed_equals_end(bootstrap, group, topic, PARTITIONS),
        30,
        "the commits to reach the end of the input",
        details,
    )


def assert_no_dead_letters(reader: TopicReader) -> None:
    dead = reader.poll(0.5)
    assert not dead, f"{len(dead)} dead letters, e.g. {dead[0].headers()}"


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    finally:
        consumer.close()


# --- Redis outage ---------------------------------------------------------------------------


def answered_after(messages: list[Message], wall_time_s: float) -> set[str]:
    """The ids of the results among ``messages`` produced after ``wall_time_s``."""
    return {
        decode_result(m.value() or b"").id
        for m in messages
        if m.timestamp()[1] > wall_time_s * 1000
    }


@pytest.mark.parametrize("busy", [False, True], ids=["while-idle", "while-busy"])
def test_redis_stopped_mid_stream_and_restarted_loses_and_repeats_nothing(
    kafka_bootstrap: str,
    topics: Topics,
    private_redis: PrivateRedis,
    open_reader: Callable[..., TopicReader],
    busy: bool,
) -> None:
    """The worker pauses while Redis is away and then finishes, each id answered once.

    Idle: the records that arrive wait at the dedup gate. Busy: records claimed
    before the outage are answered during it, and their done-marks (so their
    commits) wait for Redis to come back.
    """
    before = requests("before", 1000 if busy else 100)
    during = requests("during", 100)
    config = config_for(
        topics,
        kafka_bootstrap,
        private_redis.url,
        model=SLOW_MODEL,
        max_batch_size=8,
        max_wait_ms=5.0,
        # Busy: about 400 records claimed and queued for the model when Redis stops.
        inference_queue_batches=50 if busy else 2,
        metrics_port=0,
        consumer={},  # the default session timeout: this machine may be loaded
    )
    results = open_reader(topics.output)
    with capture_logs() as logs:
        worker = RunningWorker(config)
        try:
            produce(kafka_bootstrap, topics.input, before)
            if busy:
                wait_until(lambda: len(results.poll()) >= 40, 90, "the first results")
            else:
                results.wait_for(len(before), timeout_s=90)
                wait_until(
                    lambda: committed_equals_end(
                        kafka_bootstrap, config.group_id, topics.input, PARTITIONS
                    ),
                    30,
                    "the first commits",
                )
            private_redis.stop()
            stopped_at, logs_at_stop = time.time(), len(logs)
            produce(kafka_bootstrap, topics.input, during)
            results.poll(OUTAGE_S)

            assert worker.thread.is_alive(), f"the worker stopped: {worker.error!r}"
            outage = answered_after(results.messages, stopped_at)
            assert not {i for i in outage if i.startswith("during-")}, "ran without dedup"
            if busy:
                assert outage, "no result was published during the outage"
            else:
                assert not outage, "a result was published during the outage"
            retries = [e for e in logs[logs_at_stop:] if e["event"] == "redis retry"]
            assert retries, "no redis retry was logged during the outage"

            private_redis.start()  # with its data (append-only file): the done-marks are back
            results.wait_for(len(before) + len(during), timeout_s=90)
            wait_for_commits_at_end(kafka_bootstrap, config.group_id, topics.input)
        finally:
            worker.close()

    expected = Counter(key.decode() for key, _ in before + during)
    assert results.ids() == expected  # each id exactly once, across the outage
    # Marks of results published during and after the outage are in the new Redis.
    assert answered_after(results.messages, stopped_at) <= private_redis.done_ids()
    assert_no_dead_letters(open_reader(topics.dead_letters, 1))


def until_quiet(reader: TopicReader, quiet_s: float = 1.5) -> bool:
    """Whether nothing new arrived on ``reader`` for ``quiet_s``."""
    before = len(reader.poll(0))
    return len(reader.poll(quiet_s)) == before


@pytest.mark.parametrize("redis_back", [True, False], ids=["redis-back-in-time", "redis-not-back"])
def test_sigterm_while_redis_is_away_commits_exactly_what_was_answered(
    kafka_bootstrap: str,
    topics: Topics,
    private_redis: PrivateRedis,
    open_reader: Callable[..., TopicReader],
    redis_back: bool,
) -> None:
    """A worker stopped during an outage waits for Redis to take its done-marks, then commits.

    Back in time, Redis gets the marks before the commit; not back, the
    delivered results are committed without them (and that is logged).
    Either way the commits cover exactly the answered records: a restart
    redoes none of them and skips none of the rest.
    """
    config = config_for(
        topics,
        kafka_bootstrap,
        private_redis.url,
        model=SLOW_MODEL,
        max_batch_size=8,
        max_wait_ms=5.0,
        inference_queue_batches=50,  # about 400 records claimed and queued when Redis stops
        consumer={},
        shutdown_redis_wait_s=60.0 if redis_back else 1.0,
    )
    results = open_reader(topics.output)
    with capture_logs() as logs:
        worker = RunningWorker(config)
        try:
            produce(kafka_bootstrap, topics.input, requests("req", 1000))
            wait_until(lambda: len(results.poll()) >= 40, 90, "the first results")
            private_redis.stop()
            stopped_at = time.time()
            worker.stop.set()
            # The drain runs the queued records and publishes their results.
            wait_until(lambda: until_quiet(results), 60, "the drain to publish its results")
            if redis_back:
                results.poll(OUTAGE_S)  # the worker's own retries within a drain end by now
                assert worker.thread.is_alive(), "the worker left without its done-marks"
                private_redis.start()  # empty: only marks written from now on are there
        finally:
            worker.close()

    answered = results.poll(SETTLE_S)
    assert max(results.ids().values()) == 1
    during = answered_after(answered, stopped_at)
    assert during, "no result was published during the outage"
    committed = committed_offsets(kafka_bootstrap, config.group_id, topics.input)
    assert sum(max(0, offset) for offset in committed.values()) == len(answered)
    given_up = [e for e in logs if e["event"].startswith("redis still away at shutdown")]
    if redis_back:
        assert during <= private_redis.done_ids()
        assert not given_up
    else:
        assert len(given_up) == 1
        # The marks held back: those of the results published during the outage, and
        # of some published just before it.
        assert len(during) <= given_up[0]["count"] <= len(answered)


def test_fail_open_keeps_answering_and_committing_while_redis_is_away(
    kafka_bootstrap: str,
    topics: Topics,
    private_redis: PrivateRedis,
    open_reader: Callable[..., TopicReader],
) -> None:
    """With ``redis_outage = "fail-open"`` an outage neither pauses the worker nor its commits."""
    private_redis.stop()
    stream = requests("req", 40)
    config = config_for(
        topics, kafka_bootstrap, private_redis.url, redis_outage="fail-open", consumer={}
    )
    results = open_reader(topics.output)
    worker = RunningWorker(config)
    try:
        produce(kafka_bootstrap, topics.input, stream)
        results.wait_for(len(stream), timeout_s=90)
        wait_for_commits_at_end(kafka_bootstrap, config.group_id, topics.input)
    finally:
        worker.close()
    assert results.ids() == Counter(key.decode() for key, _ in stream)


def test_an_idle_worker_is_not_ready_while_redis_is_away(
    kafka_bootstrap: str, topics: Topics, private_redis: PrivateRedis
) -> None:
    """Readiness follows Redis before any record arrives (no pause tells it then)."""
    port = free_port()
    config = config_for(
        topics, kafka_bootstrap, private_redis.url, metrics_host="127.0.0.1", metrics_port=port
    )
    worker = RunningWorker(config)
    try:
        wait_until(lambda: readiness(port) == (200, "ready\n"), 60, "the worker to be ready")
        private_redis.stop()
        wait_until(
            lambda: readiness(port)[0] == 503,
            10,
            "readiness to see Redis away",
            lambda: str(readiness(port)),
        )
        assert readiness(port)[1].startswith("redis is unusable: "), readiness(port)
        private_redis.start()
        wait_until(lambda: readiness(port) == (200, "ready\n"), 10, "readiness to see Redis back")
    finally:
        worker.close()


# --- worker processes -----------------------------------------------------------------------


def test_sigterm_mid_stream_loses_nothing_and_a_restarted_worker_finishes(
    kafka_bootstrap: str,
    topics: Topics,
    spawn_worker: Callable[..., WorkerProcess],
    open_reader: Callable[..., TopicReader],
) -> None:
    """A worker process drains and exits 0 on SIGTERM; a second one answers the rest."""
    stream = requests("req", 2000)
    group = f"tk-test-{uuid.uuid4().hex[:8]}"
    results = open_reader(topics.output)
    produce(kafka_bootstrap, topics.input, stream)

    first = spawn_worker(group)
    wait_until(lambda: len(results.poll()) >= 100, 90, "the first results", first.log_tail)
    first.assert_running()
    assert first.terminate_and_wait(60) == 0, first.log_tail()
    answered = results.poll(SETTLE_S).copy()
    ids = results.ids()
    assert 0 < len(answered) < len(stream), "SIGTERM did not land mid-stream"
    assert max(ids.values()) == 1, f"duplicates: {[i for i, n in ids.items() if n > 1]}"
    # The drain committed exactly what it answered: no more (loss), no less (redo).
    committed = committed_offsets(kafka_bootstrap, group, topics.input)
    assert sum(max(0, offset) for offset in committed.values()) == len(answered)

    second = spawn_worker(group)
    results.wait_for(len(stream), timeout_s=90, details=second.log_tail)
    wait_for_commits_at_end(kafka_bootstrap, group, topics.input, second.log_tail)
    assert second.terminate_and_wait(60) == 0, second.log_tail()

    assert results.ids() == Counter(key.decode() for key, _ in stream)
    assert_no_dead_letters(open_reader(topics.dead_letters, 1))


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_two_workers_of_one_group_answer_every_id_once_and_stop_cleanly(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topics: Topics,
    spawn_worker: Callable[..., WorkerProcess],
    open_reader: Callable[..., TopicReader],
    protocol: str,
) -> None:
    """`run --workers 2` shares the partitions, answers each id once, stops on SIGTERM.

    With either group protocol: the classic one, or KIP-848's (the broker assigns).
    """
    group = f"tk-test-{uuid.uuid4().hex[:8]}"
    # `run --workers 2`: the supervisor
    supervisor = spawn_worker(group, "--workers", "2", "--group-protocol", protocol)
    wait_until(
        lambda: sorted(map(len, assignments(kafka_admin, group, topics.input))) == [2, 2],
        90,
        "two workers holding two partitions each",
        supervisor.log_tail,
    )
    stream = requests("req", 400)
    results = open_reader(topics.output)
    produce(kafka_bootstrap, topics.input, stream)

    results.wait_for(len(stream), timeout_s=60, details=supervisor.log_tail)
    wait_for_commits_at_end(kafka_bootstrap, group, topics.input, supervisor.log_tail)
    supervisor.assert_running()
    assert supervisor.terminate_and_wait(60) == 0, supervisor.log_tail()

    assert results.ids() == Counter(key.decode() for key, _ in stream)
    workers = results.workers()
    assert len(workers) == 2, f"results came from {workers}"
    # The supervisor exits 0 only if every worker did; each one also drained and stopped.
    assert {event["worker"] for event in supervisor.events("stopped")} == workers
    assert_no_dead_letters(open_reader(topics.dead_letters, 1))


def test_a_worker_joining_and_one_leaving_mid_stream_lose_and_repeat_nothing(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topics: Topics,
    spawn_worker: Callable[..., WorkerProcess],
    open_reader: Callable[..., TopicReader],
) -> None:
    """Two cooperative rebalances while requests keep coming: each id answered once.

    The first worker holds all partitions; a second one joins and takes two of
    them (the first revokes them with work in flight); then the first leaves on
    SIGTERM and the second takes the rest. Then the stream ends.
    """
    group = f"tk-test-{uuid.uuid4().hex[:8]}"
    # Batches that take 160 ms to fill keep work queued at any moment a rebalance starts.
    options = ("--max-batch-size", "16", "--max-wait-ms", "200")
    results = open_reader(topics.output)
    first = spawn_worker(group, *options)
    stream = PacedProducer(kafka_bootstrap, topics.input, "req", rate=100)
    try:
        wait_until(lambda: len(results.poll()) >= 30, 90, "the first results", first.log_tail)
        second = spawn_worker(group, *options)
        wait_until(
            lambda: sorted(map(len, assignments(kafka_admin, group, topics.input))) == [2, 2],
            90,
            "the second worker to take two partitions",
            second.log_tail,
        )
        wait_until(
            lambda: bool(results.poll()) and second.worker_id in results.workers(),
            60,
            "results from the second worker",
            second.log_tail,
        )
        first.assert_running()
        assert first.terminate_and_wait(60) == 0, first.log_tail()
        wait_until(
            lambda: assignments(kafka_admin, group, topics.input) == [set(range(PARTITIONS))],
            60,
            "the second worker to take every partition",
            second.log_tail,
        )
        after_first_left = len(results.poll())
        wait_until(
            lambda: len(results.poll()) >= after_first_left + 30,
            60,
            "results after the first worker left",
            second.log_tail,
        )
    finally:
        sent = stream.finish()
    results.wait_for(sum(sent.values()), timeout_s=90, details=second.log_tail)
    wait_for_commits_at_end(kafka_bootstrap, group, topics.input, second.log_tail)
    assert second.terminate_and_wait(60) == 0, second.log_tail()

    assert_no_id_answered_twice(results)
    assert results.ids() == sent
    # The first worker gave up two partitions mid-stream, then the rest when it left.
    revoked = [len(event["partitions"]) for event in first.events("revoked")]
    assert revoked == [2, 2], first.log_tail()
    assert_no_dead_letters(open_reader(topics.dead_letters, 1))


# --- re-submitted ids -----------------------------------------------------------------------


def test_an_id_resubmitted_while_its_first_copy_is_in_flight_gets_one_result(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    open_reader: Callable[..., TopicReader],
) -> None:
    """A copy polled while the worker still runs the first one waits, then is skipped."""
    stream = requests("req", 1000)
    config = config_for(
        topics,
        kafka_bootstrap,
        redis_url,
        model=SLOW_MODEL,
        max_batch_size=8,
        inference_queue_batches=100,  # most of the stream claimed and queued at once
        metrics_port=0,
        consumer={},
    )
    results = open_reader(topics.output)
    worker = RunningWorker(config)
    try:
        produce(kafka_bootstrap, topics.input, stream)
        wait_until(lambda: len(results.poll()) >= 8, 90, "the first results")
        unanswered = len(stream) - len(results.poll(0))
        produce(kafka_bootstrap, topics.input, stream)  # the same ids again
        results.wait_for(len(stream), timeout_s=90)
        wait_for_commits_at_end(kafka_bootstrap, config.group_id, topics.input)
        results.poll(SETTLE_S)
    finally:
        worker.close()

    assert unanswered > 0, "the copies came after every first copy was answered"
    assert_no_id_answered_twice(results, f"of {unanswered} ids got a second result")
    assert results.ids() == Counter(key.decode() for key, _ in stream)
    assert_no_dead_letters(open_reader(topics.dead_letters, 1))


# --- claim leases ---------------------------------------------------------------------------


def test_a_batch_slower_than_the_claim_lease_keeps_its_ids_from_another_worker(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    open_reader: Callable[..., TopicReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers get the same ids; ids wait 3 s for their batch, over a 1.5 s lease; once each.

    The workers are in two groups on one input topic, so both read every
    request, as with a re-submission to another partition. The one that claims
    an id renews the claim while the id waits for and runs in its batch; the
    other parks the id until the done-mark, then skips it.
    """
    # Worker threads of one process would share host/pid, hence claims: name each apart.
    monkeypatch.setattr(app, "worker_id", lambda: f"test-worker/{threading.get_ident()}")
    stream = requests("req", 16)
    configs = [
        config_for(
            topics,
            kafka_bootstrap,
            redis_url,
            model=VERY_SLOW_MODEL,
            max_batch_size=4,  # 4 batches: the last one's ids wait 3 s, then run 1 s
            inference_queue_batches=4,
            claim_ttl_ms=1500,  # renewed every 0.5 s: under the 3 s wait, and room for a busy CPU
            consumer={},
        )
        for _ in range(2)
    ]
    results = open_reader(topics.output)
    with capture_logs() as logs:
        workers = [RunningWorker(config) for config in configs]
        try:
            produce(kafka_bootstrap, topics.input, stream)
            results.wait_for(len(stream), timeout_s=90)
            wait_until(
                lambda: all(
                    committed_equals_end(kafka_bootstrap, c.group_id, topics.input, PARTITIONS)
                    for c in configs
                ),
                30,
                "the commits of both groups to reach the end of the input",
            )
        finally:
            for worker in workers:
                worker.close()

    assert_no_id_answered_twice(results, "ids ran on both workers")
    assert results.ids() == Counter(key.decode() for key, _ in stream)
    assert not [e for e in logs if e["event"].startswith("claims lost")]


def test_a_redis_restarted_empty_holds_the_work_until_the_loss_is_accepted(
    kafka_bootstrap: str,
    topics: Topics,
    private_redis: PrivateRedis,
    open_reader: Callable[..., TopicReader],
) -> None:
    """Ids answered before the loss are not answered again behind the operator's back.

    Seen by a running worker, and by one that starts against the empty Redis
    while its group has committed offsets; each waits for `dedup accept-loss`.
    """
    port = free_port()
    config = config_for(
        topics, kafka_bootstrap, private_redis.url, metrics_host="127.0.0.1", metrics_port=port
    )
    results = open_reader(topics.output)
    accept = ("dedup", "accept-loss", "--output-topic", topics.output)

    def lose_redis_and_resend(key: bytes) -> None:
        private_redis.stop(clean=True)
        private_redis.start()  # without the done-marks, and without the state key
        produce(kafka_bootstrap, topics.input, [(key, request_value(key.decode(), torch.ones(4)))])

    def held() -> None:
        wait_until(lambda: readiness(port)[0] == 503, 30, "readiness to see the loss")
        results.poll(3.0)
        assert "lost its done-marks" in readiness(port)[1], readiness(port)

    worker = RunningWorker(config)
    try:
        produce(kafka_bootstrap, topics.input, requests("r", 3))
        results.wait_for(3, timeout_s=60)
        wait_for_commits_at_end(kafka_bootstrap, config.group_id, topics.input)
        lose_redis_and_resend(b"r-0")
        held()
        assert results.ids() == Counter({"r-0": 1, "r-1": 1, "r-2": 1})
        assert run_cli(*accept, env={"REDIS_URL": private_redis.url}).returncode == 0
        results.wait_for(4, timeout_s=30)
    finally:
        worker.close()
    assert worker.error is None

    wait_for_commits_at_end(kafka_bootstrap, config.group_id, topics.input)
    lose_redis_and_resend(b"r-1")
    worker = RunningWorker(config)  # the group has committed offsets: a loss, not a new pipeline
    try:
        held()
        assert run_cli(*accept, env={"REDIS_URL": private_redis.url}).returncode == 0
        results.wait_for(5, timeout_s=30)
    finally:
        worker.close()
    # Answered again once each, after the loss was accepted.
    assert results.ids() == Counter({"r-0": 2, "r-1": 2, "r-2": 1})
