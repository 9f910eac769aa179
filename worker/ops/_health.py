"""Liveness, readiness and metrics over HTTP, served from daemon threads.

``/metrics``: the worker's registry in the Prometheus (or, if asked for,
OpenMetrics) text format. ``/healthz``: 200 while the polling loop completes
iterations and the inference thread finishes the batches it holds; 503
before the loop's first iteration, and when either made no progress for the
liveness timeout (derived from the stopping budget). ``/readyz``: 200 once
the model is loaded and the consumer has joined its group, 503 before that,
while the worker is paused because Redis is away or a watched dependency is
unusable (a check run by a request, at most every ``PROBE_INTERVAL_S``), and
once shutdown has begun. The loop and the composition root only store
timestamps and flags; requests never touch the loop.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from torchkafka.worker._errors import StartupError

log = structlog.get_logger(__name__)

#: The default liveness timeout (the worker derives its own from the stopping budget).
LIVENESS_TIMEOUT_S = 60.0
#: How often, at most, readiness runs a watched dependency's check.
PROBE_INTERVAL_S = 2.0
_TEXT = "text/plain; charset=utf-8"


class Health:
    """What the probes report; the loop and the composition root update it."""

    def __init__(
        self,
        stop: threading.Event,
        liveness_timeout_s: float = LIVENESS_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = stop
        self._liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._last_beat: float | None = None
        self._model_loaded = False
        self._joined = False
        self._stalled_for: Callable[[float], float] = lambda _now: 0.0
        self._redis_away = False
        self._probes: list[_Probe] = []

    def beat(self) -> None:
        """The polling loop completed an iteration."""
        self._last_beat = self._clock()

    def watch_inference(self, stalled_for: Callable[[float], float]) -> None:
        """Fail liveness too when ``stalled_for(now)``, seconds without progress, is too long."""
        self._stalled_for = stalled_for

    def redis_away(self, away: bool) -> None:
        """Whether the loop is paused because Redis does not answer."""
        self._redis_away = away

    def watch(self, problem: Callable[[], str | None]) -> None:
        """Not ready while ``problem()``, run at most every ``PROBE_INTERVAL_S``, names one."""
        self._probes.append(_Probe(problem, self._clock))

    def model_loaded(self) -> None:
        """The model is loaded and ready to run."""
        self._model_loaded = True

    def joined(self) -> None:
        """The consumer got its (possibly empty) first assignment."""
        self._joined = True

    def liveness(self) -> tuple[bool, str]:
        """Whether the loop is alive, and why (or why not)."""
        if self._last_beat is None:
            return False, "starting: no loop iteration yet"
        now = self._clock()
        idle_s = now - self._last_beat
        if idle_s > self._liveness_timeout_s:
            return False, f"stalled: no loop iteration for {idle_s:.1f} s"
        stalled_s = self._stalled_for(now)
        if stalled_s > self._liveness_timeout_s:
            return False, f"stalled: the inference thread finished no batch for {stalled_s:.1f} s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker is ready, and why (or why not)."""
        if self._stop.is_set():
            return False, "shutting down"
        if not self._model_loaded:
            return False, "loading the model"
        if not self._joined:
            return False, "joining the consumer group"
        for probe in self._probes:  # first: they name the cause of a pause, if any
            problem = probe.problem()
            if problem is not None:
                return False, problem
        if self._redis_away:
            return False, "paused: redis is away"
        return True, "ready"


class _Probe:
    """A dependency's check, run by the request that finds the last answer stale.

    One at a time: concurrent requests wait for it rather than pile up, so
    a dependency that does not answer holds them up for the check's own
    timeout at most.
    """

    def __init__(self, problem: Callable[[], str | None], clock: Callable[[], float]) -> None:
        self._problem = problem
        self._clock = clock
        self._lock = threading.Lock()
        self._due: float | None = None
        self._last: str | None = None

    def problem(self) -> str | None:
        """The check's latest answer, run again first if it is older than the interval."""
        with self._lock:
            if self._due is None or self._clock() >= self._due:
                self._last = self._problem()
                self._due = self._clock() + PROBE_INTERVAL_S
            return self._last


#: How many ports from the asked one a worker tries, for processes that share a host.
PORT_SEARCH = 100


@contextmanager
def health_endpoints(
    host: str, port: int, health: Health, registry: CollectorRegistry
) -> Iterator[int]:
    """Serve the endpoints on ``host`` for the duration; yields the port (0: none served).

    On ``port``, or when another process holds it, on the first free port
    above it (within ``PORT_SEARCH``), said in the log. ``port`` 0 serves nothing.
    """
    if port == 0:
        yield 0
        return
    server = _bind(host, port, health, registry)
    bound = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name="torchkafka-health", daemon=True
    )
    thread.start()
    if bound != port:
        log.warning("metrics port in use: serving on the next free one", asked=port, port=bound)
    log.info("serving /metrics, /healthz and /readyz", address=f"{host}:{bound}")
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _bind(host: str, port: int, health: Health, registry: CollectorRegistry) -> _Server:
    """A server on ``port`` or the first free port above it; ``StartupError`` if none is."""
    last = min(port + PORT_SEARCH, 65536) - 1
    for candidate in range(port, last + 1):
        try:
            return _Server((host, candidate), health, registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise StartupError(
                    f"cannot serve metrics on {host}:{candidate}: {exc.strerror} "
                    "(choose another --metrics-port, or 0 to disable)"
                ) from exc
    raise StartupError(
        f"cannot serve metrics on {host}: ports {port} to {last} are all in use "
        "(choose another --metrics-port, or 0 to disable)"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up shutdown

    def __init__(
        self, address: tuple[str, int], health: Health, registry: CollectorRegistry
    ) -> None:
        self.health = health
        self.registry = registry
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            encode, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encode(self.server.registry), content_type)
        elif path == "/healthz":
            self._probe(*self.server.health.liveness())
        elif path == "/readyz":
            self._probe(*self.server.health.readiness())
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", _TEXT)

    def _probe(self, ok: bool, text: str) -> None:
        self._reply(200 if ok else 503, f"{text}\n".encode(), _TEXT)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: probes and scrapes come every few seconds."""
