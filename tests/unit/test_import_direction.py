"""The packages and the worker's layers depend one way only.

codecs <- topology <- worker;  codecs, worker.config <- client <- worker.tools
inside the worker:  model, ops  <-  pipeline  <-  kafka  <-  top (app, supervisor, cli)
                    tools (client-side commands) <- cli only
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

KAFKA_AND_REDIS = ("confluent_kafka", "redis")
WORKER_LAYERS_ABOVE_MODEL = (
    "torchkafka.worker.kafka",
    "torchkafka.worker.pipeline",
    "torchkafka.worker.tools",
    "torchkafka.worker.app",
    "torchkafka.worker.supervisor",
    "torchkafka.worker.cli",
)

# folder -> import prefixes no module under it may use
FORBIDDEN = {
    "codecs": ("torchkafka.topology", "torchkafka.worker", "torchkafka.client", *KAFKA_AND_REDIS),
    "topology": ("torchkafka.worker", "torchkafka.client", "torch", "torchvision", "redis"),
    # the client: the codecs and the one connection config, never the worker's insides
    "client": (
        "redis",
        "torchkafka.worker.model",
        "torchkafka.worker.ops",
        *WORKER_LAYERS_ABOVE_MODEL,
    ),
    "worker/model": (*KAFKA_AND_REDIS, "torchkafka.topology", *WORKER_LAYERS_ABOVE_MODEL),
    "worker/ops": (
        *KAFKA_AND_REDIS,
        "torch",
        "torchkafka.worker.model",
        *WORKER_LAYERS_ABOVE_MODEL,
    ),
    "worker/pipeline": (
        "confluent_kafka",
        "torchkafka.topology",
        "torchkafka.worker.kafka",
        "torchkafka.worker.tools",
        "torchkafka.worker.app",
        "torchkafka.worker.supervisor",
        "torchkafka.worker.cli",
    ),
    "worker/config": (
        *KAFKA_AND_REDIS,
        "torch",
        "torchkafka.worker.model",
        "torchkafka.worker.ops",
        *WORKER_LAYERS_ABOVE_MODEL,
    ),
    "worker/kafka": ("torchkafka.worker.tools", "torchkafka.worker.app", "torchkafka.worker.cli"),
    "worker/tools": (
        "torchkafka.worker.kafka",
        "torchkafka.worker.pipeline",
        "torchkafka.worker.model",
        "torchkafka.worker.app",
    ),
}


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in paths:
        for module in imported_modules(path):
            for prefix in forbidden:
                if module == prefix or module.startswith(prefix + "."):
                    found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_layer_imports_only_downstream(folder: str) -> None:
    paths = sorted((ROOT / folder).rglob("*.py"))
    assert paths, folder
    assert violations(paths, FORBIDDEN[folder]) == []


def test_the_worker_never_imports_the_client_tools() -> None:
    """Only the CLI starts the client-side commands; the rest of the worker never imports them."""
    tools, cli = ROOT / "worker" / "tools", ROOT / "worker" / "cli.py"
    paths = [p for p in (ROOT / "worker").rglob("*.py") if tools not in p.parents and p != cli]
    assert violations(paths, ("torchkafka.worker.tools",)) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch.nn\nfrom torchkafka.worker import cli\nimport redis\n")
    assert imported_modules(bad) == ["torch.nn", "torchkafka.worker", "redis"]


def test_a_layer_violation_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    module = tmp_path / "worker" / "model" / "_leaky.py"
    module.parent.mkdir(parents=True)
    module.write_text("from torchkafka.worker.pipeline import Record\nimport confluent_kafka\n")
    assert violations([module], FORBIDDEN["worker/model"]) == [
        "worker/model/_leaky.py imports torchkafka.worker.pipeline",
        "worker/model/_leaky.py imports confluent_kafka",
    ]


def test_no_relative_imports_hide_from_the_check() -> None:
    for folder in FORBIDDEN:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
            assert relative == [], path


def test_topology_imports_without_torch() -> None:
    """Admin tools load topology (and the codecs' errors) without paying for torch."""
    code = "import sys, torchkafka.topology; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_cli_answers_help_without_loading_torch() -> None:
    """``torchkafka --help`` is quick: the worker's public surface loads its layers lazily."""
    code = "import sys, torchkafka.worker, torchkafka.worker.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
