"""The fault suite's duplicate rule: each extra result needs a kill that lost its done-mark."""

from __future__ import annotations

from tests.faults.report import Kill, _explain_duplicates
from tests.faults.stream import Answer

WINDOW_S = 0.5


def test_a_chain_of_kills_explains_a_result_per_kill() -> None:
    kills = [Kill("w1", 1_030), Kill("w2", 8_010)]
    copies = [Answer("a", "w1", 1_000), Answer("a", "w2", 8_000), Answer("a", "w3", 15_000)]
    assert _explain_duplicates({"a": copies}, kills, frozenset(), WINDOW_S) == []
    assert [(k.duplicates, k.largest_gap_ms) for k in kills] == [(1, 30), (1, 10)]


def test_a_copy_without_its_kill_in_the_window_is_unexplained() -> None:
    kills = [Kill("w1", 1_030), Kill("w2", 9_000)]
    copies = [Answer("a", "w1", 1_000), Answer("a", "w2", 8_000), Answer("a", "w3", 15_000)]
    (unexplained,) = _explain_duplicates({"a": copies}, kills, frozenset(), WINDOW_S)
    assert unexplained.startswith("a: 3 results")


def test_a_resent_id_may_have_two_results_not_three() -> None:
    two = [Answer("a", "w1", 1_000), Answer("a", "w1", 2_000)]
    three = [*two, Answer("a", "w1", 3_000)]
    assert _explain_duplicates({"a": two}, [], frozenset({"a"}), WINDOW_S) == []
    assert len(_explain_duplicates({"a": three}, [], frozenset({"a"}), WINDOW_S)) == 1
