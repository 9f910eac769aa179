"""docs/client.md shows each example of examples/python whole, as the suite runs it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[3]
SHOWN = re.compile(r"<!-- example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.DOTALL)


def test_every_example_is_shown_whole_in_the_client_doc() -> None:
    shown = {m["name"]: m["code"] for m in SHOWN.finditer((ROOT / "docs/client.md").read_text())}
    examples = {"blocking.py", "http_gateway.py", "streaming.py"}
    assert set(shown) == examples
    for name in examples:
        assert shown[name] == (ROOT / "examples/python" / name).read_text(), name
