"""One renderer for every log line: structlog events, stdlib records and warnings."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest
import structlog

from torchkafka.worker.kafka._clients import LIBRDKAFKA_LOGGER
from torchkafka.worker.ops import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_hold_only_json_lines_whoever_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    structlog.get_logger("torchkafka.test").info("from structlog", partition=3)
    LIBRDKAFKA_LOGGER.warning("FAIL [thrd:127.0.0.1:1/bootstrap]: Connect refused")
    logging.getLogger("PIL.Image").error("a library's record")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert [e["event"] for e in events][:3] == [
        "from structlog",
        "FAIL [thrd:127.0.0.1:1/bootstrap]: Connect refused",
        "a library's record",
    ]
    assert events[1]["logger"] == "torchkafka.librdkafka"
    assert events[1]["level"] == "warning"
    assert "a library's warning" in events[3]["event"]
    assert all("timestamp" in e for e in events)
