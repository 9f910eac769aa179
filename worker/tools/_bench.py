"""``torchkafka bench``: a source checkout's side-by-side benchmark, with the arguments given."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Where the side-by-side benchmark lives, relative to a source checkout's root.
LOOPS_BENCH = Path("bench") / "loops_bench.py"


def loops_bench_script() -> Path | None:
    """``bench/loops_bench.py`` of the checkout this torchkafka runs from, if any.

    An editable install (``make install``) runs from its checkout; a wheel has none.
    """
    script = Path(__file__).resolve().parents[2] / LOOPS_BENCH
    return script if script.is_file() else None


def run_bench(arguments: Sequence[str]) -> int:
    """Run the side-by-side benchmark with ``arguments`` (``--help`` for its own); its exit code.

    It needs the local Kafka and Redis (``make up``) and the ``bench`` extra.
    """
    script = loops_bench_script()
    if script is None:
        print(
            "torchkafka bench runs the benchmark of a source checkout (bench/loops_bench.py), "
            "and this torchkafka is installed without one: clone the repository, then "
            "`make install` and `torchkafka bench` (or `make bench`) there",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, str(script), *arguments])  # noqa: S603
