"""Model reloads: when to load the model again, and doing it off the inference path.

A reload is asked for by SIGHUP (``request``, safe from a signal handler) or,
when ``poll_s > 0``, by a change of a watched file (the model artifact or its
weights: size, mtime or inode). ``Reloader`` runs the caller's ``reload``
on its own thread, one at a time; a reload that fails is logged and the
running model stays, so a bad deploy of a model file never stops the worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FileStamp = tuple[int, int, int] | None
"""(inode, size, mtime in ns) of a file, or None while it does not exist."""


def file_stamp(path: Path) -> FileStamp:
    """What changes when ``path`` is rewritten or replaced (rename over it)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class Reloader:
    """Calls ``reload`` on a thread whenever a reload is requested or a file changed."""

    def __init__(
        self,
        reload: Callable[[], None],
        watched: Sequence[Path] = (),
        poll_s: float = 0.0,
        requests: threading.Event | None = None,
    ) -> None:
        """``requests``: an event others set to ask for a reload (a SIGHUP handler's)."""
        if poll_s < 0:
            raise ValueError("poll_s must be >= 0")
        self._reload = reload
        self._stamps = {path: file_stamp(path) for path in watched}
        self._poll_s = poll_s
        self._requested = requests or threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchkafka-reload", daemon=True)
        #: Reloads that completed and failed so far.
        self.completed = 0
        self.failed = 0

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def request(self) -> None:
        """Ask for a reload (from a signal handler or any thread)."""
        self._requested.set()

    def stop(self, timeout_s: float) -> None:
        """Stop watching; a reload under way is waited for up to ``timeout_s``."""
        self._stop.set()
        self._requested.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = self._poll_s if self._poll_s > 0 else None
            requested = self._requested.wait(timeout)
            self._requested.clear()
            if self._stop.is_set():
                return
            changed = self._changed_files()
            if requested or changed:
                self._reload_once([str(path) for path in changed] or ["request"])

    def _changed_files(self) -> list[Path]:
        changed = []
        for path, stamp in self._stamps.items():
            now = file_stamp(path)
            if now != stamp:
                self._stamps[path] = now
                if now is not None:  # a file being replaced may be absent for a moment
                    changed.append(path)
        return changed

    def _reload_once(self, causes: list[str]) -> None:
        log.info("reloading the model", causes=causes)
        try:
            self._reload()
        except Exception as exc:  # any failure keeps the running model
            log.error("model reload failed; the running model stays", error=str(exc), exc_info=exc)
            self.failed += 1
            return
        self.completed += 1
