"""The client against a real worker: results, dead letters, timeouts and idempotent resubmits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tests.integration.helpers import RunningWorker, Topics, config_for, read
from tests.support.worker_models import POISON
from torchkafka.client import Client, DeadLettered, RequestTimedOut, Submission
from torchkafka.codecs import decode_result


def test_results_dead_letters_and_a_resubmit_after_a_timeout(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
) -> None:
    config = config_for(topics, kafka_bootstrap, redis_url)
    with Client(
        config.kafka, topics.input, topics.output, topics.dead_letters, timeout_s=60
    ) as client:
        late = client.submit({"x": torch.ones(4)}, id="late", timeout_s=0.5)
        with pytest.raises(RequestTimedOut):
            late.result(10)  # no worker yet
        start_worker(config)
        result = client.infer({"x": torch.ones(4)}, id="first", meta={"trace": "t-1"})
        assert (result.id, result.meta) == ("first", {"trace": "t-1"})
        assert result.outputs["output"].shape == (3,)
        with pytest.raises(DeadLettered) as dead:
            client.infer({"x": torch.full((4,), POISON)}, id="poison")
        assert dead.value.reason == "model_error"
        again = client.infer({"x": torch.ones(4)}, id="late")  # the same id, sent again
        assert again.id == "late"
        many = client.submit_many([Submission({"x": torch.full((4,), float(n))}) for n in range(5)])
        assert len({future.result(60).id for future in many}) == 5
        assert client.in_flight == 0
    answered = [
        decode_result(m.value() or b"").id for m in read(kafka_bootstrap, topics.output, 8, 3.0)
    ]
    assert sorted(answered) == sorted(["late", "first", *(f.result().id for f in many)])
