"""Bench scripts import each other as top-level modules (bench/ is first on their path)."""

import sys
from pathlib import Path

BENCH = str(Path(__file__).parents[3] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
