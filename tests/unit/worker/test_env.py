"""The worker's environment: torch's idle CPU threads are told to sleep, unless the user said."""

from __future__ import annotations

import os

import pytest

from torchkafka.worker._env import idle_model_threads_sleep
from torchkafka.worker.cli import main


def test_openmp_threads_sleep_when_idle_unless_the_user_chose() -> None:
    environ: dict[str, str] = {}
    idle_model_threads_sleep(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    idle_model_threads_sleep(chosen)
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_run_sets_it_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset below; restored after the test")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    with pytest.raises(SystemExit):  # no topics, no model: refused after it was set
        main(["run", "--input-topic", "requests"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
