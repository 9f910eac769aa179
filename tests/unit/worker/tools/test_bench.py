"""``torchkafka bench``: the checkout's side-by-side benchmark, with the arguments as given."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torchkafka.worker.tools import _bench


def test_the_arguments_reach_the_benchmark_as_they_are() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "torchkafka.worker.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--workloads" in shown.stdout
    assert "--latency-s" in shown.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "torchkafka.worker.cli", "bench", "--rounds", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "--rounds: invalid int value: 'x'" in refused.stderr


def test_without_a_checkout_it_says_where_the_benchmark_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_bench, "loops_bench_script", lambda: None)
    assert _bench.run_bench(["--rounds", "1"]) == 2
    assert "clone the repository" in capsys.readouterr().err
