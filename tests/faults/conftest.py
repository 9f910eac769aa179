"""Fixtures of the fault suite: the 3-node cluster (reused if it runs, else started and
stopped again), one ``Scenario`` per test, and the table of all scenarios at the end
(printed, and written to ``$TORCHKAFKA_FAULTS_REPORT`` if set)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.faults.cluster import BOOTSTRAP, checked_kafka_sh, cluster_answers
from tests.faults.harness import Scenario
from tests.faults.report import Row, save, table
from torchkafka.topology import admin_client

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
ROWS = pytest.StashKey[list[Row]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash[ROWS]
    if not rows:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(table(rows))
    logs = run_dir() / "faults"
    terminalreporter.write_line(f"worker logs: {logs}/<test>/worker-N.log")
    if path := os.environ.get("TORCHKAFKA_FAULTS_REPORT"):
        save(rows, Path(path))
        terminalreporter.write_line(f"table written to {path}")


def run_dir() -> Path:
    return Path(os.environ.get("TORCHKAFKA_RUN_DIR") or ROOT / ".run")


@pytest.fixture(scope="package")
def cluster() -> Iterator[AdminClient]:
    """An admin client of the 3-node cluster (deploy/local/kafka.sh start cluster); a
    cluster this fixture started stops after the suite."""
    started = not cluster_answers()
    if started:
        checked_kafka_sh("fetch")
        checked_kafka_sh("start", "cluster")
    yield admin_client(BOOTSTRAP)
    if started:
        checked_kafka_sh("stop", "cluster")


@pytest.fixture
def open_scenario(
    cluster: AdminClient, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Scenario]]:
    """Opens the test's scenario: topics, group, a private Redis, logs in .run/faults/NAME."""
    opened: list[Scenario] = []

    def open_(name: str) -> Scenario:
        logs = run_dir() / "faults" / request.node.name
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        opened.append(Scenario(name, cluster, logs, request.config.stash[ROWS]))
        return opened[-1]

    yield open_
    for scenario in opened:
        scenario.close()
