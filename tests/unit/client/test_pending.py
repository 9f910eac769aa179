"""Pending requests: bounded, resolved by id (copies share an outcome), expired on time."""

from __future__ import annotations

import pytest

from torchkafka.client import ClientClosed, RequestTimedOut, TooManyInFlight
from torchkafka.client._pending import Pending


def test_an_outcome_settles_every_future_of_its_id() -> None:
    pending: Pending[str] = Pending(10)
    first, again, other = pending.add("a", 5.0), pending.add("a", 5.0), pending.add("b", 5.0)
    assert len(pending) == 3
    assert pending.resolve("a", "result")
    assert (first.result(0), again.result(0)) == ("result", "result")
    assert not other.done()
    assert not pending.resolve("a", "late")  # nothing awaits it any more
    assert pending.reject("b", ValueError("dead"))
    with pytest.raises(ValueError, match="dead"):
        other.result(0)
    assert len(pending) == 0


def test_the_limit_refuses_one_more() -> None:
    pending: Pending[str] = Pending(2)
    pending.add("a", 5.0)
    pending.add("b", 5.0)
    with pytest.raises(TooManyInFlight, match="2 requests await"):
        pending.add("c", 5.0)
    pending.resolve("a", "done")
    pending.add("c", 5.0)


def test_futures_past_their_deadline_time_out_and_free_their_place() -> None:
    pending: Pending[str] = Pending(10)
    soon, later = pending.add("a", 1.0), pending.add("a", 3.0)
    assert pending.expire(2.0) == 1
    with pytest.raises(RequestTimedOut, match="no result for 'a' in time"):
        soon.result(0)
    assert not later.done()
    assert pending.resolve("a", "r")
    assert later.result(0) == "r"
    assert pending.expire(10.0) == 0  # resolved: nothing left to expire


def test_closing_fails_everything_still_waiting_and_refuses_more() -> None:
    pending: Pending[str] = Pending(10)
    future = pending.add("a", 5.0)
    pending.close(ClientClosed("closed"))
    with pytest.raises(ClientClosed, match="closed"):
        future.result(0)
    assert len(pending) == 0
    with pytest.raises(ClientClosed, match="closed"):
        pending.add("b", 5.0)


def test_an_outcome_after_a_timeout_is_kept_for_the_resubmit() -> None:
    pending: Pending[str] = Pending(10)
    pending.add("a", 1.0)
    pending.expire(2.0)
    assert not pending.resolve("a", "late result")  # nobody waits: kept
    assert pending.add("a", 9.0).result(0) == "late result"
    assert not pending.add("a", 9.0).done(), "kept once: a second resubmit waits"
    pending.add("b", 1.0)
    pending.expire(2.0)
    pending.reject("b", ValueError("dead"))
    with pytest.raises(ValueError, match="dead"):
        pending.add("b", 9.0).result(0)
    assert not pending.resolve("c", "never asked")
    assert not pending.add("c", 9.0).done()


def test_a_cancelled_future_frees_its_place_and_a_late_outcome_is_ignored() -> None:
    pending: Pending[str] = Pending(1)
    future = pending.add("a", 60.0)
    assert future.cancel()
    assert len(pending) == 0
    again = pending.add("b", 60.0)  # the place is free
    assert not pending.resolve("a", "late")  # nobody waits: no error in the router
    assert pending.resolve("b", "done")
    assert again.result(0) == "done"
    assert pending.expire(120.0) == 0  # the cancelled one's deadline passes quietly
