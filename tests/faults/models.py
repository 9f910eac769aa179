"""Models of the fault suite (loaded as python:tests.faults.models:NAME)."""

from torch import nn

from tests.support.worker_models import SlowLinear

#: Seconds per batch of ``slower_than_poll_interval``: above the max.poll.interval.ms
#: (6 s, librdkafka's floor being session.timeout.ms) its scenario sets.
BATCH_S = 7.0


def slower_than_poll_interval() -> nn.Module:
    return SlowLinear(BATCH_S)
