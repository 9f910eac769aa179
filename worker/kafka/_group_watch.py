"""The consumer group's state, from librdkafka's statistics: not ready while it is unusable.

librdkafka reports the group's state in its statistics (every
``statistics.interval.ms``) as ``cgrp.state``: ``up`` once the coordinator is
known and reachable; ``query-coord``, ``wait-coord``, ``wait-broker`` or
``wait-broker-transport`` while the member looks for it or cannot reach it (the
brokers down, the coordinator partition without a leader). Meanwhile nothing
is consumed or committed, yet the loop goes on stepping: liveness holds, and
readiness is what tells.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

#: How long the group may be away before readiness fails: a coordinator that moves
#: (a broker restarted) is found again within seconds.
GROUP_GRACE_S = 15.0
#: How often librdkafka reports its statistics, in milliseconds.
STATISTICS_INTERVAL_MS = 5000


class GroupWatch:
    """``stats_cb`` for the consumer; ``problem`` for readiness."""

    def __init__(
        self, grace_s: float = GROUP_GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._grace_s = grace_s
        self._clock = clock
        self._state = "up"  # not known yet: start-up checked that Kafka answers
        self._since = clock()

    def on_stats(self, stats: str) -> None:
        """librdkafka's statistics callback (it runs inside ``consume``)."""
        try:
            state = json.loads(stats)["cgrp"]["state"]
        except (ValueError, KeyError, TypeError):
            return  # no group in the report
        if state != self._state:
            self._state, self._since = str(state), self._clock()

    def problem(self) -> str | None:
        """Why the group is unusable (its state other than ``up`` for the grace), or None."""
        away_s = self._clock() - self._since
        if self._state == "up" or away_s < self._grace_s:
            return None
        return (
            f"the consumer group is unusable: its coordinator is not reached "
            f"(state {self._state} for {away_s:.0f} s)"
        )
