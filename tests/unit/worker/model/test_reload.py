"""Reload triggers: a request or a changed file runs the reload, failures keep going."""

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from torchkafka.worker.model import Reloader
from torchkafka.worker.model._reload import file_stamp


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_request_runs_one_reload() -> None:
    calls = threading.Semaphore(0)
    reloader = Reloader(calls.release)
    reloader.start()
    try:
        assert not calls.acquire(timeout=0.2)  # nothing asked, nothing done
        reloader.request()
        assert calls.acquire(timeout=5)
        wait_until(lambda: reloader.completed == 1)
    finally:
        reloader.stop(5)


def test_a_rewritten_or_replaced_file_runs_a_reload(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"v1")
    reloads: list[bytes] = []
    reloader = Reloader(lambda: reloads.append(model.read_bytes()), [model], poll_s=0.02)
    reloader.start()
    try:
        time.sleep(0.1)
        assert reloads == []  # unchanged: no reload
        replacement = tmp_path / "model.pt.new"
        replacement.write_bytes(b"v2-longer")
        os.replace(replacement, model)  # the atomic way to deploy a model file
        wait_until(lambda: reloads == [b"v2-longer"])
        model.unlink()
        time.sleep(0.1)
        assert reloads == [b"v2-longer"]  # gone for a moment: nothing to load
        model.write_bytes(b"v3")
        wait_until(lambda: reloads == [b"v2-longer", b"v3"])
    finally:
        reloader.stop(5)


def test_a_failed_reload_is_counted_and_the_next_one_still_runs() -> None:
    outcomes = iter([RuntimeError("corrupt file"), None])

    def reload() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    reloader = Reloader(reload)
    reloader.start()
    try:
        with capture_logs() as logs:
            reloader.request()
            wait_until(lambda: reloader.failed == 1)
        reloader.request()
        wait_until(lambda: reloader.completed == 1)
    finally:
        reloader.stop(5)
    failed = [e for e in logs if e["event"].startswith("model reload failed")]
    assert len(failed) == 1
    assert isinstance(failed[0]["exc_info"], RuntimeError)  # logged with its traceback


def test_file_stamp_sees_size_mtime_and_absence(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    assert file_stamp(path) is None
    path.write_bytes(b"a")
    first = file_stamp(path)
    path.write_bytes(b"ab")
    assert file_stamp(path) != first
