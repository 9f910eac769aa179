"""The demo's verdict: one result per valid input, every malformed one (and nothing else)
dead-lettered, at least once."""

from __future__ import annotations

from collections import Counter

from torchkafka.worker.tools._demo import DemoReport


def report(results: Counter[str], dead_lettered: Counter[str]) -> DemoReport:
    return DemoReport(
        sent=2,
        malformed=frozenset({"r-bad-0", "r-bad-1"}),
        duplicates_sent=1,
        results=results,
        dead_lettered=dead_lettered,
    )


def test_a_dead_letter_repeated_for_an_input_read_again_still_passes() -> None:
    passed = report(Counter(a=1, b=1), Counter({"r-bad-0": 2, "r-bad-1": 1}))
    assert passed.ok
    assert passed.repeated_dead_letters == 1


def test_a_missing_dead_letter_a_stray_one_or_a_second_result_fails() -> None:
    assert not report(Counter(a=1, b=1), Counter({"r-bad-0": 1})).ok
    assert not report(Counter(a=1, b=1), Counter({"r-bad-0": 1, "r-bad-1": 1, "a": 1})).ok
    assert not report(Counter(a=2, b=1), Counter({"r-bad-0": 1, "r-bad-1": 1})).ok
    assert not report(Counter(a=1), Counter({"r-bad-0": 1, "r-bad-1": 1})).ok
