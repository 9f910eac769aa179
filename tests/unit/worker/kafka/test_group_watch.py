"""GroupWatch: readiness fails once librdkafka reports the group away for longer than the grace."""

from __future__ import annotations

import json

from tests.unit.worker.kafka.loops import FakeClock
from torchkafka.worker.kafka import GroupWatch


def stats(state: str) -> str:
    return json.dumps({"name": "c#consumer-1", "cgrp": {"state": state, "join_state": "steady"}})


def test_a_group_away_longer_than_the_grace_makes_the_worker_not_ready() -> None:
    clock = FakeClock()
    watch = GroupWatch(grace_s=15, clock=clock)
    watch.on_stats(stats("up"))
    assert watch.problem() is None
    watch.on_stats(stats("wait-coord"))
    clock.now += 10
    watch.on_stats(stats("wait-coord"))  # still away: counted from when it left
    assert watch.problem() is None  # a coordinator moving is found again within the grace
    clock.now += 6
    assert watch.problem() == (
        "the consumer group is unusable: its coordinator is not reached (state wait-coord for 16 s)"
    )
    watch.on_stats(stats("up"))
    assert watch.problem() is None


def test_statistics_without_a_group_change_nothing() -> None:
    clock = FakeClock()
    watch = GroupWatch(grace_s=1, clock=clock)
    watch.on_stats(json.dumps({"name": "p#producer-1"}))
    watch.on_stats("not json")
    clock.now += 5
    assert watch.problem() is None
