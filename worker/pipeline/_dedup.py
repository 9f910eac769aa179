"""Which request ids are done or in flight, kept in Redis.

Keys, for an id's UTF-8 bytes ``ID`` (Redis keys are binary-safe, so any id is a
safe key, and ``done:``/``claim:`` follow a fixed namespace, so no id can name
another id's key)::

    {namespace}:done:ID    "<token>:<owner>"    EX done_ttl_s
    {namespace}:claim:ID   "<token>:<owner>"    PX claim_ttl_ms
    {namespace}:state      "<why> <when>"       no expiry
    {namespace}:running:TOPIC:PARTITION:OFFSET
                           hash: run id -> 1    EX RUN_MARK_TTL_S

The ``running`` hashes are the crash-loop guard's (``_crash_guard``): which
process lifetimes were running the record at that place (``mark_running``,
``forget_run``).

The state key says that this Redis holds the namespace's done-marks: it is
written once, when a new pipeline starts (its consumer group has committed
nothing yet), and read with every ``claim``. A Redis
restarted without its data (or flushed) lacks it, so the loss is seen at the
next call instead of answering ids again silently; ``state_loss`` decides
what follows: ``pause`` raises ``DedupStateLost`` (the worker holds its work
until ``accept_loss`` or a restore puts the key back), ``continue`` writes
the key again and goes on. Either way it is logged and counted.

The order (docs/worker.md, "Delivery semantics"): claim (short lease,
``renew``-ed while in progress, fenced by a token) -> infer -> produce ->
delivery ack -> ``mark_done`` -> commit. The worker's token is its own
assignment epoch, not the consumer group's generation, which confluent-kafka
does not expose; docs/worker.md ("Claims and their fencing token") says what
follows from that.

Every call is one command, hence one round trip, whatever the batch size:
``claim`` (which also tells the done ids), ``renew``, ``mark_done`` and ``release``
each run one Lua script over the whole batch (atomic, no per-id commands to pack). Each
call is idempotent, so a retry after a lost reply is safe.

Retried (then ``TransientError``): connection failures and timeouts (including
LOADING after a restart and an exhausted connection pool), READONLY (a failover
in progress), OOM (a full Redis under ``noeviction``: an outage that pauses the
worker), TRYAGAIN, CLUSTERDOWN and MASTERDOWN; after the retries, a circuit
breaker fails the next calls at once for a while. Not retried, raised as
``WorkerError`` with the redis error as its cause (``StartupError`` from
``ping``): bugs or configuration errors that retrying cannot fix, such as
authentication and permission failures and every other redis error (wrong
type, script errors).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgpack
import redis
import structlog
from redis import exceptions as rx

from torchkafka.worker._errors import DedupStateLost, StartupError, TransientError, WorkerError
from torchkafka.worker.config import RedisStateLoss
from torchkafka.worker.ops import RetryKind, WorkerMetrics
from torchkafka.worker.pipeline import _dedup_scripts as scripts
from torchkafka.worker.pipeline._breaker import CircuitBreaker
from torchkafka.worker.pipeline._crash_guard import RUN_MARK_TTL_S
from torchkafka.worker.pipeline._records import Place
from torchkafka.worker.pipeline._retry import RetrySettings, retry_policy

T = TypeVar("T")
log = structlog.get_logger(__name__)

_TRANSIENT: tuple[type[rx.RedisError], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.ClusterDownError,
)
_FATAL: tuple[type[rx.RedisError], ...] = (
    rx.AuthenticationError,
    rx.AuthorizationError,
    rx.ExternalAuthProviderError,
)


#: What the claim script says of an id.
DONE, HELD = 2, 1


@dataclass(frozen=True, slots=True)
class Claims:
    """What ``claim`` found: the ids already done, and the ids the owner holds now.

    The others are held by another owner.
    """

    done: set[str]
    held: set[str]


def is_transient(error: BaseException) -> bool:
    """Whether a redis error may go away by itself (see the module docstring)."""
    return isinstance(error, _TRANSIENT) and not isinstance(error, _FATAL)


class Dedup(Protocol):
    """What the pipeline asks of the dedup store; ``DedupStore`` is the Redis one.

    Each call raises ``TransientError`` while the store is away.
    """

    def claim(self, ids: Sequence[str], owner: str, fencing_token: int) -> Claims:
        """Claim for ``owner`` the ids of ``ids`` that are not done; which are done, which held."""
        ...

    def renew(self, ids: Sequence[str], owner: str, fencing_token: int) -> set[str]:
        """Extend ``owner``'s claims on ``ids``; the ids whose claims it still held."""
        ...

    def mark_done(self, ids: Sequence[str], owner: str, fencing_token: int) -> None:
        """Write the done-marks of ``ids`` (and drop their claims)."""
        ...

    def release(self, ids: Sequence[str], owner: str) -> None:
        """Give up ``owner``'s claims on ``ids``."""
        ...


class DedupStore:
    """Done-marks and claims for request ids, one Redis round trip per batch.

    ``client`` should have socket timeouts set and its own retries off
    (``retry=Retry(NoBackoff(), 0)``), so that ``retry`` alone decides how long a
    call may take. Nothing is sent before the first call. Safe to share between
    threads. ``metrics``, if given, counts retries and tracks whether Redis is away.
    After a call fails its retries, ``breaker`` makes the next calls fail at once
    for a while (then one call probes Redis), so an outage costs each poll
    nothing rather than the whole retry budget. ``state_loss``: what a Redis
    found without its done-marks leads to (the module docstring).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        done_ttl_s: int,
        claim_ttl_ms: int,
        retry: RetrySettings,
        metrics: WorkerMetrics | None = None,
        breaker: CircuitBreaker | None = None,
        state_loss: RedisStateLoss = "pause",
    ) -> None:
        if not namespace:
            raise ValueError("DedupStore needs a namespace")
        if done_ttl_s < 1 or claim_ttl_ms < 1:
            raise ValueError("DedupStore TTLs must be >= 1")
        self._client = client
        self._done_prefix = f"{namespace}:done:".encode()
        self._claim_prefix = f"{namespace}:claim:".encode()
        self._state_key = f"{namespace}:state".encode()
        self._state_loss = state_loss
        self._holding_for_state = False
        self._state_seen = False
        # Until ``check_state`` says how to tell, a missing state key is a loss.
        self._has_history: Callable[[], bool] = lambda: True
        self._done_ttl_s = done_ttl_s
        self._claim_ttl_ms = claim_ttl_ms
        self._metrics = metrics
        self._breaker = breaker or CircuitBreaker()
        self._retrying = retry_policy(
            retry,
            transient=is_transient,
            event="redis retry",
            logger_name=__name__,
            on_retry=None if metrics is None else lambda: metrics.retry(RetryKind.REDIS),
        )
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._mark_done = client.register_script(scripts.MARK_DONE)
        self._release = client.register_script(scripts.RELEASE)
        self._running_prefix = f"{namespace}:running:".encode()
        self._mark_running = client.register_script(scripts.MARK_RUNNING)
        self._forget_run = client.register_script(scripts.FORGET_RUN)

    @property
    def claim_ttl_ms(self) -> int:
        """How long a claim lasts unless renewed."""
        return self._claim_ttl_ms

    def done_key(self, id_: str) -> bytes:
        """The key of ``id_``'s done-mark."""
        return self._done_prefix + _id_bytes(id_)

    def claim_key(self, id_: str) -> bytes:
        """The key of ``id_``'s claim."""
        return self._claim_prefix + _id_bytes(id_)

    def claim(self, ids: Sequence[str], owner: str, fencing_token: int) -> Claims:
        """Claim the ids that are not done and not claimed by another owner, in one call.

        Returns the ids already done, and those ``owner`` holds afterwards, each
        for ``claim_ttl_ms``. A claim that ``owner`` already holds under the same
        or an older token is renewed (claim again to extend a lease); one under a
        newer token is not, and neither is another owner's claim, whatever its
        token: the same id can arrive on a partition another worker owns (a
        duplicate submission), so a newer token does not prove the holder is gone.
        """
        unique = _unique(ids)
        if not unique:
            return Claims(set(), set())
        args = (*self._ids_args(unique), owner, fencing_token, self._claim_ttl_ms)
        flags = self._call("claim", lambda: self._claim(keys=[self._state_key], args=args))
        if flags == -1:
            self._state_missing()
            return self.claim(unique, owner, fencing_token)
        self._state_present()
        pairs = list(zip(unique, flags, strict=True))
        return Claims({i for i, f in pairs if f == DONE}, {i for i, f in pairs if f == HELD})

    def renew(self, ids: Sequence[str], owner: str, fencing_token: int) -> set[str]:
        """Extend ``owner``'s claims on ``ids`` by ``claim_ttl_ms``; the ids renewed.

        Only claims ``owner`` still holds under ``fencing_token`` or an older
        one are extended. A claim that expired, or that another owner (or a
        newer token) took since, is left alone and missing from the result:
        the id may be running elsewhere too. An id whose claim ``owner``'s own
        done-mark replaced (its result was marked on another thread since) is
        in the result: nothing was lost.
        """
        unique = _unique(ids)
        if not unique:
            return set()
        args = (*self._ids_args(unique), owner, fencing_token, self._claim_ttl_ms)
        renewed = self._call("renew", lambda: self._renew(args=args))
        return {i for i, flag in zip(unique, renewed, strict=True) if flag}

    def mark_done(self, ids: Sequence[str], owner: str, fencing_token: int) -> None:
        """Mark ``ids`` done for ``done_ttl_s`` and drop ``owner``'s claims on them.

        Call only once the results are acknowledged by the broker. The marks are
        written whoever holds the claims (an expired or lost claim does not
        change that the result is out); their value is
        ``"<fencing_token>:<owner>"``.
        """
        unique = _unique(ids)
        if not unique:
            return
        args = (*self._ids_args(unique), fencing_token, self._done_ttl_s, owner)
        self._call("mark_done", lambda: self._mark_done(args=args))

    def release(self, ids: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims on ``ids`` (work revoked or abandoned)."""
        unique = _unique(ids)
        if not unique:
            return
        args = (*self._ids_args(unique), owner)
        self._call("release", lambda: self._release(args=args))

    def check_state(self, pipeline_has_history: Callable[[], bool]) -> None:
        """At start-up: write the state key for a new pipeline, or report its loss.

        ``pipeline_has_history()`` tells whether the consumer group has
        committed offsets: with none, nothing was ever marked done and a
        missing key is written; with some, the marks are gone (the policy
        applies, but ``pause`` raises nothing here: the loop's first call
        does). A Redis that does not answer yet is checked at the first call.
        """
        self._has_history = pipeline_has_history
        try:
            present = self._call("state", lambda: self._client.exists(self._state_key))
        except TransientError as exc:
            log.warning("cannot check the dedup state yet: redis does not answer", error=str(exc))
            return
        if present:
            self._state_present()
            return
        with contextlib.suppress(DedupStateLost):  # raised again by the loop's first call
            self._state_missing()

    def state_problem(self) -> str | None:
        """Why the worker holds its work for the dedup state, if it does (no Redis call)."""
        if self._holding_for_state:
            return "paused: redis lost its done-marks (`torchkafka dedup accept-loss` to go on)"
        return None

    def accept_loss(self) -> None:
        """Write the state key again: the lost marks are gone, and work may go on."""
        self._write_state("loss accepted")
        log.warning("dedup state loss accepted", key=self._state_key.decode())

    def _state_missing(self) -> None:
        """Redis answered without the state key: raise ``DedupStateLost``, or write it.

        Written without a word for a new pipeline (this store never saw the
        key, and the group has no history); otherwise as the policy says.
        """
        if not self._state_seen and not self._has_history():
            self._write_state("created for a new pipeline")
            log.info("dedup state created: a new pipeline", key=self._state_key.decode())
            self._state_seen = True
            return
        pausing = self._state_loss == "pause"
        if not self._holding_for_state:  # a loss not reported yet
            if self._metrics is not None:
                self._metrics.dedup_state_lost(holding=pausing)
            log.error(
                "redis lost its done-marks: holding all work until they are restored or "
                "`torchkafka dedup accept-loss` is run"
                if pausing
                else "redis lost its done-marks: continuing; ids answered before the loss "
                "get a second result if they arrive again",
                key=self._state_key.decode(),
                redis_state_loss=self._state_loss,
            )
        if not pausing:
            self._write_state("continued after a loss")
            return
        self._holding_for_state = True
        raise DedupStateLost(f"redis has no {self._state_key.decode()}: its done-marks are gone")

    def _state_present(self) -> None:
        self._state_seen = True
        if self._holding_for_state:
            log.warning("redis holds the dedup state again: work goes on")
            self._holding_for_state = False
            if self._metrics is not None:
                self._metrics.dedup_state_restored()

    def _write_state(self, why: str) -> None:
        value = f"{why} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        self._call("state", lambda: self._client.set(self._state_key, value))

    def ping(self) -> None:
        """Check that Redis answers (else ``TransientError``), admits us, and is no cluster.

        Refused credentials or permissions are a ``StartupError``.

        The dedup scripts touch the keys of a whole batch in one call, which a
        cluster refuses unless all of them hash to one slot: a cluster is a
        ``StartupError``, not an outage that never ends.
        """
        try:
            info = self._call("ping", lambda: self._client.info("cluster"))
        except WorkerError as exc:
            if isinstance(exc.__cause__, (*_FATAL, rx.NoPermissionError)):
                raise StartupError(f"redis refused the worker: {exc.__cause__}") from exc
            raise
        if info.get("cluster_enabled"):
            raise StartupError(
                "Redis Cluster is not supported for dedup (its scripts use many keys in one "
                "call); use a standalone Redis, with replicas or Sentinel for failover"
            )

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        if self._breaker.open:
            raise TransientError(f"redis {operation} not tried: redis failed just now")
        try:
            result = fn() if self._breaker.half_open else self._retrying(fn)
        except rx.RedisError as error:
            if is_transient(error):
                self._breaker.failed()
                self._outage(True)
                raise TransientError(f"redis {operation} failed: {error!r}") from error
            raise WorkerError(f"redis {operation} failed: {error}") from error
        self._breaker.succeeded()
        self._outage(False)
        return result

    def _outage(self, flag: bool) -> None:
        if self._metrics is not None:
            self._metrics.redis_outage(flag)

    def _ids_args(self, ids: Sequence[str]) -> tuple[bytes, bytes, bytes]:
        """The id scripts' first arguments: the key prefixes, then ``ids`` packed."""
        # surrogatepass: any Python str maps to distinct bytes, as in ``done_key``
        packed = msgpack.packb(ids, unicode_errors="surrogatepass")
        return self._done_prefix, self._claim_prefix, packed

    def _places_args(
        self, finished: Sequence[Place], places: Sequence[Place]
    ) -> tuple[bytes, bytes, bytes]:
        """The run-log scripts' first arguments: the key prefix, then both lists packed."""
        return self._running_prefix, msgpack.packb(finished), msgpack.packb(places)

    def running_key(self, place: Place) -> bytes:
        """The key of the crash-loop guard's marks on ``place``."""
        topic, partition, offset = place
        return self._running_prefix + f"{topic}:{partition}:{offset}".encode()

    def mark_running(
        self, run_id: str, places: Sequence[Place], finished: Sequence[Place], suspect: bool
    ) -> list[int]:
        """Delete the marks of ``finished``; per place of ``places``, how many other runs marked it.

        ``places`` are marked for ``run_id`` (for ``RUN_MARK_TTL_S``, the
        expiry renewed) when every count is 0, or whatever the counts when
        ``suspect``. One round trip; a repeat is harmless.
        """
        if not places and not finished:
            return []
        args = (*self._places_args(finished, places), run_id, RUN_MARK_TTL_S, int(suspect))
        counts = self._call("mark_running", lambda: self._mark_running(args=args))
        return [int(n) for n in counts]

    def forget_run(self, run_id: str, running: Sequence[Place], finished: Sequence[Place]) -> None:
        """Delete the marks of ``finished``, and ``run_id``'s marks of ``running``."""
        if not running and not finished:
            return
        args = (*self._places_args(finished, running), run_id)
        self._call("forget_run", lambda: self._forget_run(args=args))


def _id_bytes(id_: str) -> bytes:
    # surrogatepass: any Python str maps to distinct bytes, even one that is not valid Unicode
    return id_.encode("utf-8", "surrogatepass")


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))
