"""Scaling a consumer group during a stream: 1 -> 2 -> 3 -> 2 worker processes on 6 partitions.

Each step waits until the group is stable with the partitions spread over the
live workers and results come from the newcomer; the stream keeps coming
throughout. Every request is answered exactly once, the commits reach the
end, nothing is dead-lettered. The workers are separate `torchkafka run`
processes on this host, all asked for the same metrics port: each serves on
its own (the first free one from it) and reports ready there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.helpers import Topics, committed_equals_end
from tests.integration.streams import (
    PacedProducer,
    TopicReader,
    WorkerProcess,
    assert_no_id_answered_twice,
    assignments,
    readiness,
    wait_until,
)
from tests.support.ports import free_port

PARTITIONS = 6


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    return Topics(new_topic, partitions=PARTITIONS)


def spread(workers: int) -> list[int]:
    """The partition counts of ``workers`` members sharing PARTITIONS evenly."""
    return sorted(PARTITIONS // workers + (i < PARTITIONS % workers) for i in range(workers))


def metrics_port(worker: WorkerProcess) -> int:
    (event,) = worker.events("serving /metrics, /healthz and /readyz")
    return int(str(event["address"]).rpartition(":")[2])


def test_workers_join_and_leave_mid_stream_and_every_request_is_answered_once(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topics: Topics,
    spawn_worker: Callable[..., WorkerProcess],
    open_reader: Callable[..., TopicReader],
) -> None:
    group = f"tk-test-scaling-{uuid.uuid4().hex[:8]}"
    port = str(free_port())
    options = ("--metrics-host", "127.0.0.1", "--metrics-port", port, "--max-wait-ms", "50")
    results = open_reader(topics.output, PARTITIONS)
    stream = PacedProducer(kafka_bootstrap, topics.input, "req", rate=150)
    workers: list[WorkerProcess] = []

    def scale_to(count: int) -> None:
        while len(workers) < count:
            workers.append(spawn_worker(group, *options))
        while len(workers) > count:
            leaving = workers.pop(0)
            assert leaving.terminate_and_wait(60) == 0, leaving.log_tail()
        wait_until(
            lambda: (
                sorted(map(len, assignments(kafka_admin, group, topics.input))) == spread(count)
            ),
            90,
            f"{count} workers sharing the {PARTITIONS} partitions",
            workers[-1].log_tail,
        )
        answered = len(results.poll())
        wait_until(
            lambda: len(results.poll()) >= answered + 50,
            60,
            f"results with {count} workers",
            workers[-1].log_tail,
        )

    try:
        for count in (1, 2, 3):
            scale_to(count)
        ports = {metrics_port(worker) for worker in workers}
        assert len(ports) == 3, f"three processes asked for {port}, served on {ports}"
        assert all(readiness(p) == (200, "ready\n") for p in ports)
        scale_to(2)
    finally:
        sent = stream.finish()
    results.wait_for(sum(sent.values()), timeout_s=90, details=workers[-1].log_tail)
    wait_until(
        lambda: committed_equals_end(kafka_bootstrap, group, topics.input, PARTITIONS),
        30,
        "the commits to reach the end of the input",
        workers[-1].log_tail,
    )
    for worker in workers:
        assert worker.terminate_and_wait(60) == 0, worker.log_tail()

    assert_no_id_answered_twice(results)
    assert results.ids() == sent
    assert not open_reader(topics.dead_letters, 1).poll(0.5), "dead letters"
