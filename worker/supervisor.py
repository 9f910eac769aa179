"""Runs N worker processes of one consumer group and stops them together.

SIGTERM/SIGINT stop every worker (each drains); SIGHUP makes each reload its model.

Worker ``i`` (from 0) serves its metrics and health endpoints on
``metrics_port + i`` (or the first free port above it: ``health_endpoints``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from types import FrameType

import structlog

from torchkafka.worker.config import WorkerConfig
from torchkafka.worker.ops import LogFormat, configure_logging

log = structlog.get_logger(__name__)


def run_processes(config: WorkerConfig, log_format: LogFormat, log_level: str) -> int:
    """Start ``config.workers`` processes; on SIGTERM/SIGINT stop them all; the exit code.

    That is 0, or the first failed worker's own code (2: it could not start),
    1 when it was killed by a signal.
    """
    context = multiprocessing.get_context("spawn")  # no forked torch/librdkafka state
    processes = [
        context.Process(
            target=_child,
            args=(config, index, log_format, log_level),
            name=f"torchkafka-worker-{index}",
        )
        for index in range(config.workers)
    ]
    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.pid is not None and process.is_alive():
                process.terminate()  # SIGTERM: the child drains and leaves the group

    def reload(_signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)  # each child reloads its model

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    for process in processes:
        process.start()
    log.info("workers started", count=len(processes), pids=[p.pid for p in processes])
    failed = 0
    while processes and not failed:
        for process in list(processes):
            process.join(timeout=0.2)
            if process.exitcode is not None:
                processes.remove(process)
                if process.exitcode != 0 and not failed:
                    failed = process.exitcode if process.exitcode > 0 else 1
                if process.exitcode != 0 and not stopping.is_set():
                    log.error("worker exited", name=process.name, exitcode=process.exitcode)
    if processes:  # one failed: stop the others too
        forward(signal.SIGTERM, None)
        for process in processes:
            process.join(config.timeouts.stop_grace_s)  # their drain, then the kill
            if process.is_alive():
                process.kill()
    return failed


def _child(config: WorkerConfig, index: int, log_format: LogFormat, log_level: str) -> None:
    from torchkafka.worker.app import run_in_this_process

    configure_logging(log_format, log_level)
    raise SystemExit(run_in_this_process(config, index))
