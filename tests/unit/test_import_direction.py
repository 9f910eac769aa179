"""The packages depend one way only: codecs <- topology <- worker (DESIGN.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# package folder -> import prefixes it must never use
FORBIDDEN = {
    "codecs": ("torchkafka.topology", "torchkafka.worker", "confluent_kafka", "redis"),
    "topology": ("torchkafka.worker", "torch", "torchvision", "redis"),
}


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            for prefix in FORBIDDEN[package]:
                if module == prefix or module.startswith(prefix + "."):
                    found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downstream(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch.nn\nfrom torchkafka.worker import cli\n")
    assert imported_modules(bad) == ["torch.nn", "torchkafka.worker"]


def test_no_relative_imports_hide_from_the_check() -> None:
    for package in FORBIDDEN:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
            assert relative == [], path


def test_topology_imports_without_torch() -> None:
    """Admin tools load topology (and the codecs' errors) without paying for torch."""
    code = "import sys, torchkafka.topology; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
