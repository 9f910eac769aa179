"""The client against a real worker: results, dead letters, timeouts and idempotent resubmits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch

from tests.integration.helpers import RunningWorker, Topics, config_for, read
from tests.support.worker_models import POISON
from torchkafka.client import (
    AsyncClient,
    Client,
    DeadLettered,
    RequestTimedOut,
    SendFailed,
    Submission,
)
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


def test_many_clients_at_once_each_get_their_own_results(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
) -> None:
    config = config_for(topics, kafka_bootstrap, redis_url)
    start_worker(config)
    clients = [
        Client(config.kafka, topics.input, topics.output, topics.dead_letters, timeout_s=60)
        for _ in range(4)
    ]
    try:
        sent = {
            index: client.submit_many(
                [Submission({"x": torch.full((4,), float(index))}) for _ in range(25)]
            )
            for index, client in enumerate(clients)
        }
        for index, futures in sent.items():
            results = [future.result(60) for future in futures]
            assert len({result.id for result in results}) == 25
            # each got the output of its own input: x = index in every element
            expected = clients[index].infer({"x": torch.full((4,), float(index))}).outputs
            assert all(torch.equal(r.outputs["output"], expected["output"]) for r in results)
        assert [client.in_flight for client in clients] == [0, 0, 0, 0]
    finally:
        for client in clients:
            client.close()


def test_a_request_the_broker_refuses_fails_with_send_failed(
    kafka_bootstrap: str, topics: Topics
) -> None:
    settings = {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": "10000"}
    with Client(settings, topics.input, topics.output, topics.dead_letters) as client:
        with pytest.raises(SendFailed, match=r"too large|size"):
            client.infer({"x": torch.zeros(10_000)}, timeout_s=30)  # 40 kB, refused at once
        assert client.in_flight == 0
    missing = f"{topics.input}-missing"  # the broker creates no topic (auto-create is off)
    settings = {"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": "3000"}
    with Client(settings, missing, topics.output, topics.dead_letters) as client:
        future = client.submit({"x": torch.ones(4)}, timeout_s=60)  # nobody flushes or polls
        with pytest.raises(SendFailed, match=r"Unknown topic|timed out"):
            future.result(30)  # the delivery report, served by the client's own thread


def test_the_asyncio_client_awaits_results_dead_letters_and_timeouts(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
) -> None:
    config = config_for(topics, kafka_bootstrap, redis_url)

    async def scenario() -> list[str]:
        async with AsyncClient(
            config.kafka, topics.input, topics.output, topics.dead_letters
        ) as client:
            with pytest.raises(RequestTimedOut):
                await client.infer({"x": torch.ones(4)}, timeout_s=0.5)  # no worker yet
            start_worker(config)
            result = await client.infer({"x": torch.ones(4)}, id="a-1", meta={"n": 1})
            assert (result.id, result.meta) == ("a-1", {"n": 1})
            with pytest.raises(DeadLettered) as dead:
                await client.infer({"x": torch.full((4,), POISON)})
            assert dead.value.reason == "model_error"
            abandoned = await client.submit({"x": torch.ones(4)}, timeout_s=60)
            abandoned.cancel()  # a cancelled caller frees its place
            await asyncio.sleep(0)  # (the cancellation reaches the client on the next turn)
            assert client.in_flight == 0
            many = await client.submit_many(
                [Submission({"x": torch.full((4,), float(n))}) for n in range(10)]
            )
            results = await asyncio.gather(*many)
            return [r.id for r in results]

    assert len(set(asyncio.run(scenario()))) == 10
