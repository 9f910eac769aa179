"""DedupStore against the real Redis: semantics, races, expiry, odd ids, round trips."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest
import redis
from structlog.testing import capture_logs

from torchkafka.worker import DedupStateLost, TransientError, WorkerError
from torchkafka.worker.config import RedisStateLoss
from torchkafka.worker.ops import WorkerMetrics
from torchkafka.worker.pipeline import Claims, DedupStore, RetrySettings
from torchkafka.worker.pipeline._crash_guard import RUN_MARK_TTL_S

DONE_TTL_S = 60
FAST_RETRY = RetrySettings(max_attempts=3, initial_s=0.001, max_s=0.002, max_total_s=1.0)

StoreFactory = Callable[..., DedupStore]


@pytest.fixture
def namespace(key_prefix: str) -> str:
    return f"{key_prefix}torchkafka:results:model"


@pytest.fixture
def make_store(redis_client: redis.Redis, namespace: str) -> StoreFactory:
    def make(
        client: redis.Redis = redis_client,
        claim_ttl_ms: int = 10_000,
        metrics: WorkerMetrics | None = None,
        state_loss: RedisStateLoss = "pause",
    ) -> DedupStore:
        store = DedupStore(
            client,
            namespace,
            DONE_TTL_S,
            claim_ttl_ms,
            FAST_RETRY,
            metrics=metrics,
            state_loss=state_loss,
        )
        store.check_state(pipeline_has_history=lambda: False)  # a new pipeline
        return store

    return make


@pytest.fixture
def store(make_store: StoreFactory) -> DedupStore:
    return make_store()


def wait_until(condition: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_claim_then_mark_done_then_claim_again(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    ids = ["a", "b", "c"]
    assert store.claim(ids, "w1", 7) == Claims(done=set(), held=set(ids))
    assert redis_client.get(store.claim_key("a")) == b"7:w1"

    store.mark_done(["a", "b"], "w1", 7)

    assert redis_client.get(store.done_key("a")) == b"7:w1"
    assert not redis_client.exists(store.claim_key("a"), store.claim_key("b"))
    assert redis_client.exists(store.claim_key("c"))
    # Done ids are never claimed again; the claim says which are done.
    assert store.claim(ids, "w1", 7) == Claims(done={"a", "b"}, held={"c"})
    assert store.claim(ids, "w2", 8) == Claims(done={"a", "b"}, held=set())


def test_done_mark_has_the_configured_ttl(store: DedupStore, redis_client: redis.Redis) -> None:
    store.mark_done(["x"], "w1", 1)
    assert DONE_TTL_S - 2 <= redis_client.ttl(store.done_key("x")) <= DONE_TTL_S


def test_claim_has_the_configured_ttl(make_store: StoreFactory, redis_client: redis.Redis) -> None:
    store = make_store(claim_ttl_ms=5_000)
    store.claim(["x"], "w1", 1)
    assert 3_000 <= redis_client.pttl(store.claim_key("x")) <= 5_000


def test_mark_done_without_a_live_claim_still_marks(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    store.claim(["theirs"], "w2", 3)

    store.mark_done(["unclaimed", "theirs"], "w1", 3)

    assert store.claim(["unclaimed", "theirs"], "w3", 3).done == {"unclaimed", "theirs"}
    assert redis_client.get(store.claim_key("theirs")) == b"3:w2", "another owner's claim stays"


def test_another_owners_claim_blocks_whatever_its_token(store: DedupStore) -> None:
    assert store.claim(["x"], "w1", 5).held == {"x"}
    assert store.claim(["x"], "w2", 5).held == set()
    assert store.claim(["x"], "w2", 6).held == set()


def test_reclaim_renews_with_same_or_newer_token_only(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    key = store.claim_key("x")
    assert store.claim(["x"], "w1", 5).held == {"x"}
    redis_client.pexpire(key, 1_000)

    assert store.claim(["x"], "w1", 5).held == {"x"}
    assert redis_client.pttl(key) > 5_000, "the lease was renewed"
    assert store.claim(["x"], "w1", 6).held == {"x"}
    assert redis_client.get(key) == b"6:w1"

    assert store.claim(["x"], "w1", 4).held == set(), "a stale generation is fenced off"
    assert redis_client.get(key) == b"6:w1"


def test_renew_extends_only_the_owners_live_claims(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    assert store.claim(["mine", "older", "expired"], "w1", 5).held == {"mine", "older", "expired"}
    assert store.claim(["theirs"], "w2", 5).held == {"theirs"}
    redis_client.set(store.claim_key("older"), b"3:w1")
    redis_client.set(store.claim_key("newer"), b"6:w1")  # this owner under a newer token
    redis_client.delete(store.claim_key("expired"))
    for id_ in ("mine", "older", "theirs", "newer"):
        redis_client.pexpire(store.claim_key(id_), 1_000)

    ids = ["mine", "older", "theirs", "newer", "expired"]
    assert store.renew(ids, "w1", 5) == {"mine", "older"}

    for id_ in ("mine", "older"):
        assert redis_client.pttl(store.claim_key(id_)) > 5_000, id_
    for id_ in ("theirs", "newer"):
        assert redis_client.pttl(store.claim_key(id_)) <= 1_000, id_
    assert redis_client.get(store.claim_key("older")) == b"3:w1", "renewing keeps the value"
    assert not redis_client.exists(store.claim_key("expired")), "a lapsed claim is not retaken"
    assert store.renew(["mine"], "w2", 9) == set()


def test_an_id_marked_done_by_its_owner_meanwhile_is_not_a_lost_claim(store: DedupStore) -> None:
    """Done-marks are written on another thread than renewals: a mark is no loss."""
    assert store.claim(["done-here", "done-elsewhere"], "w1", 5).held == {
        "done-here",
        "done-elsewhere",
    }
    store.mark_done(["done-here"], "w1", 5)
    store.release(["done-elsewhere"], "w1")  # as if it expired...
    assert store.claim(["done-elsewhere"], "w2", 6).held == {"done-elsewhere"}
    store.mark_done(["done-elsewhere"], "w2", 6)  # ...and another worker ran it too
    assert store.renew(["done-here", "done-elsewhere"], "w1", 5) == {"done-here"}


def test_owner_names_with_colons_are_compared_whole(store: DedupStore) -> None:
    assert store.claim(["x"], "host:1:abc", 1).held == {"x"}
    assert store.claim(["x"], "host:1", 1).held == set()
    assert store.claim(["x"], "1:abc", 1).held == set()
    assert store.claim(["x"], "host:1:abc", 1).held == {"x"}


def test_release_drops_only_the_owners_claims(store: DedupStore, redis_client: redis.Redis) -> None:
    assert store.claim(["a", "b"], "w1", 1).held == {"a", "b"}
    assert store.claim(["c"], "w2", 1).held == {"c"}

    store.release(["a", "c", "never-claimed"], "w1")

    assert not redis_client.exists(store.claim_key("a"))
    assert redis_client.exists(store.claim_key("b"))
    assert redis_client.exists(store.claim_key("c"))
    assert store.claim(["a"], "w2", 1).held == {"a"}


def test_duplicate_ids_in_a_batch(store: DedupStore) -> None:
    assert store.claim(["a", "a", "b"], "w1", 1).held == {"a", "b"}
    store.mark_done(["a", "a"], "w1", 1)
    assert store.claim(["a", "a", "b"], "w1", 1) == Claims(done={"a"}, held={"b"})


def test_claim_expires_and_another_owner_takes_over(
    make_store: StoreFactory, redis_client: redis.Redis
) -> None:
    store = make_store(claim_ttl_ms=200)
    assert store.claim(["x"], "w1", 1).held == {"x"}
    assert store.claim(["x"], "w2", 1).held == set()
    assert 0 < redis_client.pttl(store.claim_key("x")) <= 200

    assert wait_until(lambda: not redis_client.exists(store.claim_key("x")), timeout_s=2.0)

    assert store.claim(["x"], "w2", 1).held == {"x"}
    assert store.claim(["x"], "w1", 1).held == set()
    store.mark_done(["x"], "w1", 1)
    late = store.claim(["x"], "w3", 1).done
    assert late == {"x"}, "a late done-mark from the first owner still counts"


def test_racing_owners_each_id_goes_to_exactly_one(
    make_store: StoreFactory, redis_url: str
) -> None:
    owners = [f"w{n}" for n in range(4)]
    ids = [f"id-{n}" for n in range(400)]
    clients = [redis.Redis.from_url(redis_url) for _ in owners]
    stores = [make_store(client) for client in clients]
    start = threading.Barrier(len(owners), timeout=10)

    def run(n: int) -> set[str]:
        order = random.Random(n).sample(ids, len(ids))
        start.wait()
        held: set[str] = set()
        for chunk in range(0, len(order), 16):
            held |= stores[n].claim(order[chunk : chunk + 16], owners[n], 1).held
        return held

    try:
        with ThreadPoolExecutor(len(owners)) as pool:
            results = list(pool.map(run, range(len(owners))))
    finally:
        for client in clients:
            client.close()

    assert sum(len(held) for held in results) == len(ids)
    assert set().union(*results) == set(ids)


ODD_IDS = [
    "",
    " ",
    "with spaces and\ttabs\nand newlines",
    "a:b:c",
    ":",
    "a:",
    "x:claim:y",
    "done:x",
    "*?[glob]\\",
    "{hash-tag}",
    "\x00nul\x00",
    "ünïcødé ✓ 日本語 🚀",
    "é" * 128,  # 256 bytes
    "x" * 256,
    "\ud800 lone surrogate",
]


def test_odd_ids_are_exact_distinct_keys(
    store: DedupStore, redis_client: redis.Redis, namespace: str
) -> None:
    assert len(("é" * 128).encode()) == 256
    assert store.claim(ODD_IDS, "w1", 1).held == set(ODD_IDS)
    store.mark_done(ODD_IDS, "w1", 1)

    assert store.claim(ODD_IDS, "w2", 1).done == set(ODD_IDS)
    for id_ in ODD_IDS:
        raw = id_.encode("utf-8", "surrogatepass")
        assert store.done_key(id_) == f"{namespace}:done:".encode() + raw
        assert redis_client.exists(store.done_key(id_))
        assert not redis_client.exists(store.claim_key(id_))
    near_misses = ["a", "a::", "x:claim", "é" * 127, "x" * 255, "\ud801 lone surrogate"]
    assert store.claim(near_misses, "w1", 1) == Claims(done=set(), held=set(near_misses))


def test_wrong_type_is_a_worker_error_without_retry_keeping_its_cause(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    redis_client.hset(store.claim_key("x"), "not", "a claim")
    with capture_logs() as logs, pytest.raises(WorkerError, match="WRONGTYPE") as raised:
        store.claim(["x"], "w1", 1)
    assert isinstance(raised.value.__cause__, redis.ResponseError)
    assert not isinstance(raised.value, TransientError)
    assert logs == []


def test_ping(store: DedupStore) -> None:
    store.ping()


class RoundTrips:
    """A client whose socket writes are counted: each write is one round trip."""

    def __init__(self, url: str) -> None:
        self.writes = 0
        counter = self

        class Counting(redis.Connection):
            def send_packed_command(
                self, command: bytes | str | list[bytes], check_health: bool = True
            ) -> None:
                counter.writes += 1
                # redis-py leaves this method unannotated
                super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        self.pool = redis.ConnectionPool.from_url(url, connection_class=Counting)
        self.client = redis.Redis(connection_pool=self.pool)

    def count(self, fn: Callable[[], object]) -> int:
        before = self.writes
        fn()
        return self.writes - before


@pytest.fixture
def round_trips(redis_url: str) -> Iterator[RoundTrips]:
    counted = RoundTrips(redis_url)
    yield counted
    counted.client.close()
    counted.pool.disconnect()


@pytest.mark.parametrize("batch", [1, 32, 256])
def test_every_call_is_one_round_trip(
    make_store: StoreFactory, round_trips: RoundTrips, batch: int
) -> None:
    store = make_store(round_trips.client)
    # the first script calls may load the scripts (NOSCRIPT -> SCRIPT LOAD)
    store.claim(["warm-up"], "w0", 1)
    store.renew(["warm-up"], "w0", 1)
    store.mark_done(["warm-up"], "w0", 1)
    store.release(["warm-up"], "w0")
    ids = [f"id-{n}" for n in range(batch)]

    assert round_trips.count(lambda: store.claim(ids, "w1", 1)) == 1
    assert round_trips.count(lambda: store.renew(ids, "w1", 1)) == 1
    assert round_trips.count(lambda: store.release(ids[: (batch + 1) // 2], "w1")) == 1
    assert round_trips.count(lambda: store.mark_done(ids, "w1", 1)) == 1
    assert round_trips.count(lambda: store.ping()) == 1
    assert store.claim(ids, "w1", 1).done == set(ids)


def test_empty_batches_send_nothing(make_store: StoreFactory, round_trips: RoundTrips) -> None:
    store = make_store(round_trips.client)
    store.ping()

    def all_empty() -> None:
        assert store.claim([], "w1", 1) == Claims(set(), set())
        assert store.renew([], "w1", 1) == set()
        store.mark_done([], "w1", 1)
        store.release([], "w1")

    assert round_trips.count(all_empty) == 0


def lose_everything(client: redis.Redis, namespace: str) -> None:
    """What a Redis restarted without its data looks like to the namespace: no keys."""
    keys = list(client.scan_iter(match=f"{namespace}:*"))
    if keys:
        client.delete(*keys)


def sample(metrics: WorkerMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_a_new_pipeline_gets_its_state_key_and_a_loss_pauses_until_accepted(
    make_store: StoreFactory, redis_client: redis.Redis, namespace: str
) -> None:
    metrics = WorkerMetrics()
    store = make_store(metrics=metrics)
    assert redis_client.exists(f"{namespace}:state")
    store.claim(["a"], "w1", 1)
    store.mark_done(["a"], "w1", 1)
    lose_everything(redis_client, namespace)
    with capture_logs() as logs, pytest.raises(DedupStateLost, match="done-marks are gone"):
        store.claim(["a"], "w1", 1)  # "a" is not marked any more: the store must not say so
    with pytest.raises(DedupStateLost):
        store.claim(["a"], "w1", 1)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "redis lost its done-marks: holding all work until they are restored or "
        "`torchkafka dedup accept-loss` is run"
    ]
    assert sample(metrics, "torchkafka_dedup_state_lost") == 1
    assert sample(metrics, "torchkafka_dedup_state_losses_total") == 1  # once per loss
    assert not redis_client.exists(f"{namespace}:claim:a")  # nothing claimed meanwhile

    store.accept_loss()
    assert store.claim(["a"], "w1", 1) == Claims(done=set(), held={"a"})
    assert sample(metrics, "torchkafka_dedup_state_lost") == 0


def test_a_restored_state_key_resumes_the_work(
    make_store: StoreFactory, redis_client: redis.Redis, namespace: str
) -> None:
    store = make_store()
    saved = redis_client.get(f"{namespace}:state")
    assert saved is not None
    lose_everything(redis_client, namespace)
    with pytest.raises(DedupStateLost):
        store.claim(["a"], "w1", 1)
    redis_client.set(f"{namespace}:state", saved)  # a restore from a snapshot
    assert store.claim(["a"], "w1", 1).done == set()


def test_continue_writes_the_state_again_and_goes_on_counting_the_loss(
    make_store: StoreFactory, redis_client: redis.Redis, namespace: str
) -> None:
    metrics = WorkerMetrics()
    store = make_store(metrics=metrics, state_loss="continue")
    lose_everything(redis_client, namespace)
    with capture_logs() as logs:
        assert store.claim(["a"], "w1", 1).held == {"a"}
    assert redis_client.exists(f"{namespace}:state")
    assert any("continuing" in e["event"] for e in logs if e["log_level"] == "error")
    assert sample(metrics, "torchkafka_dedup_state_losses_total") == 1
    assert sample(metrics, "torchkafka_dedup_state_lost") == 0


def test_a_start_without_the_state_key_is_a_loss_only_for_a_pipeline_with_history(
    redis_client: redis.Redis, namespace: str
) -> None:
    metrics = WorkerMetrics()
    store = DedupStore(redis_client, namespace, DONE_TTL_S, 10_000, FAST_RETRY, metrics=metrics)
    store.check_state(pipeline_has_history=lambda: True)  # committed offsets, no marks: lost
    assert not redis_client.exists(f"{namespace}:state")
    assert sample(metrics, "torchkafka_dedup_state_lost") == 1
    with pytest.raises(DedupStateLost):
        store.claim(["a"], "w1", 1)
    store.accept_loss()
    store.check_state(pipeline_has_history=lambda: True)
    assert store.claim(["a"], "w1", 1).done == set()


# --- the crash-loop guard's run log -------------------------------------------------------

A = ("requests", 0, 11)
B = ("requests", 3, 7)
C = ("requests", 0, 12)


def marks(client: redis.Redis, store: DedupStore, place: tuple[str, int, int]) -> set[bytes]:
    return set(cast("list[bytes]", client.hkeys(store.running_key(place))))


def test_run_marks_live_under_the_namespace_by_topic_partition_and_offset(
    store: DedupStore, namespace: str
) -> None:
    assert (
        store.running_key(("requests", 3, 1234)) == f"{namespace}:running:requests:3:1234".encode()
    )


def test_the_scripts_build_the_same_run_mark_keys_for_large_offsets(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    far = ("requests", 11, 2**52 + 3)  # past what Lua's %.14g prints exactly
    store.mark_running("run-1", [far], [], suspect=False)
    assert marks(redis_client, store, far) == {b"run-1"}
    store.forget_run("run-1", [far], [])
    assert marks(redis_client, store, far) == set()


def test_mark_running_counts_the_other_runs_and_marks_only_an_all_clean_batch(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    assert store.mark_running("run-1", [A, B], [], suspect=False) == [0, 0]
    assert redis_client.hgetall(store.running_key(A)) == {b"run-1": b"1"}
    assert 3590 < redis_client.ttl(store.running_key(A)) <= RUN_MARK_TTL_S
    assert store.mark_running("run-1", [A, B], [], suspect=False) == [0, 0], "its own: a retry"
    # run-1 died running A and B; run-2 screens A with a new record C
    assert store.mark_running("run-2", [A, C], [], suspect=False) == [1, 0]
    assert marks(redis_client, store, A) == {b"run-1"}, "not all clean: nothing marked"
    assert not redis_client.exists(store.running_key(C))
    assert store.mark_running("run-2", [A], [], suspect=True) == [1], "A runs alone"
    assert marks(redis_client, store, A) == {b"run-1", b"run-2"}
    assert store.mark_running("run-3", [A, B, C], [], suspect=False) == [2, 1, 0]


def test_mark_running_first_deletes_every_mark_of_the_finished_places(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    store.mark_running("run-1", [A, B], [], suspect=False)
    store.mark_running("run-2", [A], [], suspect=True)
    assert store.mark_running("run-2", [B], [A], suspect=False) == [1]
    assert not redis_client.exists(store.running_key(A))
    assert store.mark_running("run-2", [], [B], suspect=False) == []  # finished places only
    assert not redis_client.exists(store.running_key(B))


def test_forget_run_removes_that_runs_marks_and_the_finished_places(
    store: DedupStore, redis_client: redis.Redis
) -> None:
    store.mark_running("run-1", [A], [], suspect=False)
    store.mark_running("run-2", [A], [], suspect=True)
    store.mark_running("run-2", [B], [], suspect=False)
    store.mark_running("run-2", [C], [], suspect=False)
    store.forget_run("run-2", [A, C], [B])
    assert marks(redis_client, store, A) == {b"run-1"}
    assert not redis_client.exists(store.running_key(B), store.running_key(C))


def test_each_run_log_call_is_one_round_trip_and_an_empty_one_none(
    make_store: StoreFactory, round_trips: RoundTrips
) -> None:
    store = make_store(round_trips.client)
    store.mark_running("warm-up", [A], [], suspect=False)  # may load the scripts
    store.forget_run("warm-up", [A], [])
    places = [("requests", 0, n) for n in range(32)]
    finished = [("requests", 1, n) for n in range(32)]
    assert round_trips.count(lambda: store.mark_running("r", places, finished, False)) == 1
    assert round_trips.count(lambda: store.mark_running("r", places[:1], [], True)) == 1
    assert round_trips.count(lambda: store.forget_run("r", places, finished)) == 1
    assert round_trips.count(lambda: store.mark_running("r", [], [], False)) == 0
    assert round_trips.count(lambda: store.forget_run("r", [], [])) == 0
