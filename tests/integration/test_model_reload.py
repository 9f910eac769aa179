"""A new model version swapped in while the worker runs: every result names its model."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from tests.integration.helpers import (
    RunningWorker,
    Topics,
    config_for,
    produce,
    read,
    request_value,
)
from tests.support.tiny_models import FEATURES, save_torchscript, tiny_mlp
from torchkafka.codecs import Result, decode_result
from torchkafka.worker.model._versions import VERSION_DIGITS

EXAMPLE = torch.zeros(1, FEATURES)


def version_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:VERSION_DIGITS]


def results_by_id(bootstrap: str, topic: str, expect: int) -> dict[str, Result]:
    results = [decode_result(m.value() or b"") for m in read(bootstrap, topic, expect)]
    by_id = {result.id: result for result in results}
    assert len(by_id) == len(results), "a request got two results"
    return by_id


def test_a_replaced_model_file_is_loaded_and_swapped_in_between_batches(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    model_file = tmp_path / "model.pt"
    save_torchscript(tiny_mlp(seed=1), EXAMPLE, model_file)
    staged = tmp_path / "model.pt.new"
    save_torchscript(tiny_mlp(seed=2), EXAMPLE, staged)
    versions = {version_of(model_file): tiny_mlp(seed=1), version_of(staged): tiny_mlp(seed=2)}
    old, new = versions
    config = config_for(
        topics,
        kafka_bootstrap,
        redis_url,
        model=f"torchscript:{model_file}",
        model_watch_s=0.1,
        input_shape=(FEATURES,),
        batch_buckets=(4, 16),
    )
    worker = RunningWorker(config)
    try:
        rows = {f"req-{i}": torch.randn(FEATURES) for i in range(40)}

        def send(ids: list[str]) -> None:
            produce(
                kafka_bootstrap,
                topics.input,
                [(i.encode(), request_value(i, rows[i])) for i in ids],
            )

        send(list(rows)[:20])
        assert {
            r.model.version for r in results_by_id(kafka_bootstrap, topics.output, 20).values()
        } == {old}

        os.replace(staged, model_file)  # how a deploy should replace it: atomically
        sent = 20
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the new version answers (after its warm-up)
            probe = f"probe-{sent}"
            rows[probe] = torch.randn(FEATURES)
            send([probe])
            sent += 1
            if results_by_id(kafka_bootstrap, topics.output, sent)[probe].model.version == new:
                break
            time.sleep(0.2)
        send(list(rows)[20:40])
        results = results_by_id(kafka_bootstrap, topics.output, sent + 20)
    finally:
        worker.close()

    assert len(results) == sent + 20
    assert {results[f"req-{i}"].model.version for i in range(20, 40)} == {new}
    for rid, result in results.items():  # each result is its named model's output
        expected = versions[result.model.version](rows[rid].unsqueeze(0))[0].detach()
        torch.testing.assert_close(result.outputs["output"], expected, rtol=1e-5, atol=1e-6)
