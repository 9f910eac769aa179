"""What a scenario delivered, checked against the delivery promise, as a table row.

Counting starts from the producer's delivery reports: an acknowledged id must
have an answer (a result or a dead letter), else it is lost. Every id gets one
result; a second one is allowed only where docs/worker.md says it may come: the
first copy came from a worker killed with SIGKILL, within ``kill_window_s``
before the kill (a result written, its done-mark not), or the id was re-sent
after Redis lost its done-marks and the loss was accepted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.stream import Answer, Stream
from tests.faults.workers import event_time


@dataclass
class Kill:
    """A worker SIGKILLed, and the duplicates it left."""

    worker: str
    at_ms: int
    duplicates: int = 0
    largest_gap_ms: int = 0  # from a duplicate's first result to the kill
    rate: int = 0  # the worker's results in the second before the kill


@dataclass
class Row:
    scenario: str
    sent: int
    acked: int
    indeterminate: int
    results: int
    unique: int
    lost: int
    duplicates: int
    dead_letters: int
    committed_s: float | None  # seconds from the stream going idle; None: not in time
    exits: list[int]
    notes: str
    violations: list[str] = field(default_factory=list)

    HEADER = (
        "scenario", "ids sent", "acked", "indeterminate", "results", "unique", "lost",
        "duplicates", "dead letters", "committed==end", "SIGTERM exits", "ok", "notes",
    )  # fmt: skip

    def cells(self) -> tuple[str, ...]:
        committed = "no" if self.committed_s is None else f"yes ({self.committed_s:.1f} s)"
        return (
            self.scenario,
            *(str(n) for n in (self.sent, self.acked, self.indeterminate, self.results)),
            *(str(n) for n in (self.unique, self.lost, self.duplicates, self.dead_letters)),
            committed,
            ",".join(map(str, self.exits)) or "-",
            "FAIL" if self.violations else "ok",
            self.notes,
        )


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, columns aligned."""
    lines = [Row.HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(Row.HEADER))]
    text = [_cells(line, widths) for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def _cells(cells: tuple[str, ...], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def save(rows: list[Row], path: Path) -> None:
    path.write_text(table(rows) + "\n")


def evaluate(
    scenario: str,
    stream: Stream,
    results: list[Answer],
    dead_letters: list[Answer],
    kills: list[Kill],
    resent: frozenset[str],
    kill_window_s: float,
) -> tuple[Row, list[str]]:
    """The row of the table, and the violations of the promise (besides commits and exits)."""
    answers = defaultdict(list)
    for answer in results:
        answers[answer.id].append(answer)
    lost = stream.acked - answers.keys() - {d.id for d in dead_letters}
    unknown = answers.keys() - set(stream.ids)
    unexplained = _explain_duplicates(answers, kills, resent, kill_window_s)
    for kill in kills:
        kill.rate = sum(1 for a in results if a.worker == kill.worker and _before(a, kill, 1000))
    violations = [
        *([f"{len(lost)} acknowledged ids lost, e.g. {sorted(lost)[:5]}"] if lost else []),
        *([f"results for ids never sent: {sorted(unknown)[:5]}"] if unknown else []),
        *([f"{len(dead_letters)} dead letters, e.g. {dead_letters[:3]}"] if dead_letters else []),
        *unexplained,
    ]
    row = Row(
        scenario=scenario,
        sent=stream.sent,
        acked=len(stream.acked),
        indeterminate=stream.indeterminate,
        results=len(results),
        unique=len(answers),
        lost=len(lost),
        duplicates=len(results) - len(answers),
        dead_letters=len(dead_letters),
        committed_s=None,
        exits=[],
        notes="",
    )
    return row, violations


def _explain_duplicates(
    answers: dict[str, list[Answer]],
    kills: list[Kill],
    resent: frozenset[str],
    kill_window_s: float,
) -> list[str]:
    """Attribute each id's extra results to kills or a re-send; the ones that fit neither.

    A result followed within the window by its worker's kill explains the
    next copy (its done-mark was lost with the worker); when the next owner
    is killed the same way, a third copy follows, and so on: every result but
    the last must be so explained. A re-sent id may have a second result.
    """
    by_worker = {kill.worker: kill for kill in kills}
    unexplained = []
    window_ms = int(kill_window_s * 1000)
    for id_, copies in answers.items():
        if len(copies) == 1 or (len(copies) == 2 and id_ in resent):
            continue
        earlier = sorted(copies, key=lambda a: a.timestamp_ms)[:-1]
        killed = [
            (answer, kill)
            for answer in earlier
            if (kill := by_worker.get(answer.worker)) and _before(answer, kill, window_ms)
        ]
        if len(killed) == len(earlier):
            for answer, kill in killed:
                kill.duplicates += 1
                kill.largest_gap_ms = max(kill.largest_gap_ms, kill.at_ms - answer.timestamp_ms)
            continue
        described = [(a.worker, a.timestamp_ms) for a in copies]
        unexplained.append(f"{id_}: {len(copies)} results {described}, no kill or re-send explains")
    if len(unexplained) > 10:
        unexplained = [*unexplained[:10], f"... {len(unexplained) - 10} more"]
    return unexplained


def _before(answer: Answer, kill: Kill, window_ms: int) -> bool:
    return 0 <= kill.at_ms - answer.timestamp_ms <= window_ms


def kill_notes(kills: list[Kill]) -> str:
    """E.g. ``duplicates per kill (victim's results/s before it): 1 (210/s), 0 (190/s); ...``."""
    per_kill = ", ".join(f"{k.duplicates} ({k.rate}/s)" for k in kills)
    gap = max((k.largest_gap_ms for k in kills), default=0)
    return (
        f"duplicates per kill (the victim's results/s before it): {per_kill}; "
        f"first copies <= {gap} ms before the kill"
    )


def claims_lost_note(reports: list[tuple[str, dict[str, Any]]], results: list[Answer]) -> str:
    """The ids reported as claims lost (``torchkafka_claims_lost_total``): how many, and how
    many of those the log names (20 a report) had their result from that very worker
    already when it said so. ``reports``: (worker, its "claims lost" log event)."""
    first: dict[str, Answer] = {}
    for answer in sorted(results, key=lambda a: -a.timestamp_ms):
        first[answer.id] = answer
    count = sum(event.get("count", 0) for _, event in reports)
    named = [
        (worker, event_time(event) * 1000, id_) for worker, event in reports for id_ in event["ids"]
    ]
    answered = sum(
        1
        for worker, at_ms, id_ in named
        if (done := first.get(id_)) and done.worker == worker and done.timestamp_ms <= at_ms
    )
    if not count:
        return ""
    return (
        f"claims-lost warnings: {count} ids; of the {len(named)} logged, {answered} already "
        "answered by the same worker"
    )
