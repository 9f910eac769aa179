"""The Go example client (examples/go), written from docs/wire-format.md alone: its wire
package's unit tests (the doc's byte-exact examples among them), then the command against
the real broker and a worker: a result for each valid request, a dead letter for the bad
one, and a non-zero exit for a request that got no outcome.

Building needs the Go toolchain and the module cache: ``go mod download`` fetches what
go.sum lists (from the Go module proxy) on a machine that has none of it.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import RunningWorker, Topics, config_for, read
from torchkafka.codecs import decode_request

EXAMPLE = Path(__file__).parents[2] / "examples" / "go"
GO = shutil.which("go")

pytestmark = pytest.mark.skipif(
    GO is None, reason="`go` is not on PATH: the Go example client (examples/go) needs Go 1.26+"
)


def go(*args: str, timeout_s: float = 300) -> str:
    """``go ARGS`` in examples/go; its output. Fails the test on a non-zero exit."""
    assert GO is not None
    done = subprocess.run(
        [GO, *args], cwd=EXAMPLE, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"go {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def go_example(tmp_path: Path) -> Path:
    """The example command, built into tmp_path (nothing is written into the repository)."""
    go("mod", "download")
    binary = tmp_path / "torchkafka-go-example"
    go("build", "-buildvcs=false", "-o", str(binary), "./cmd/torchkafka-go-example")
    return binary


def test_the_wire_package_is_vetted_formatted_and_passes_its_tests() -> None:
    go("mod", "download")
    go("vet", "./...")
    gofmt = Path(go("env", "GOROOT").strip()) / "bin" / "gofmt"
    unformatted = subprocess.run(
        [str(gofmt), "-l", "."], cwd=EXAMPLE, capture_output=True, text=True, check=True
    ).stdout
    assert unformatted == "", f"not gofmt-formatted: {unformatted}"
    output = go("test", "-count=1", "-v", "./...")
    assert "--- PASS: TestRequestExampleByteForByte" in output
    assert "--- PASS: TestResultExampleByteForByte" in output
    assert "--- PASS: TestExamplesAreTheDocs" in output  # not skipped: the doc is found


def run_example(
    binary: Path, bootstrap: str, topics: Topics, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-bootstrap", bootstrap, "-input", topics.input, "-output", topics.output,
         "-dead-letters", topics.dead_letters, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def outcomes(stdout: str) -> dict[str, list[str]]:
    """The example's lines by request id: ``KIND ID FIELDS...`` -> {ID: [KIND, FIELDS...]}."""
    lines = [line.split(" ", 2) for line in stdout.splitlines()]
    return {words[1]: [words[0], *words[2:]] for words in lines}


def test_results_and_a_dead_letter_for_the_go_client(
    kafka_bootstrap: str,
    redis_url: str,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    go_example: Path,
) -> None:
    prefix = f"go-{uuid.uuid4().hex[:8]}-"
    alone = run_example(
        go_example, kafka_bootstrap, topics, "-count", "1", "-id-prefix", f"{prefix}alone-",
        "-timeout", "2s",
    )  # fmt: skip
    assert alone.returncode == 1, alone.stderr  # no worker yet: nothing comes back
    assert outcomes(alone.stdout) == {f"{prefix}alone-0": ["missing"]}

    start_worker(config_for(topics, kafka_bootstrap, redis_url))
    done = run_example(
        go_example, kafka_bootstrap, topics, "-count", "3", "-bad", "-id-prefix", prefix,
        "-deadline", "120s", "-timeout", "60s",
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}{done.stderr}"
    seen = outcomes(done.stdout)
    assert seen.keys() == {f"{prefix}{n}" for n in range(3)} | {f"{prefix}bad"}
    for n in range(3):
        kind, fields = seen[f"{prefix}{n}"]
        assert kind == "result"
        assert fields.startswith("output=float32[3] model="), fields  # the model's 4 -> 3
    kind, fields = seen[f"{prefix}bad"]
    assert kind == "dead-letter"
    assert fields.startswith("reason=payload_size_mismatch error=\"$.inputs['x'].data: "), fields
    assert "results: 3, dead letters: 1, missing: 0, unexpected: 0" in done.stderr

    # What the Go client wrote is what torchkafka's own decoder reads, on the partition
    # librdkafka's default partitioner (CRC-32 of the key) gives the id.
    records = read(kafka_bootstrap, topics.input, 5, timeout_s=20)
    assert len(records) == 5
    for record in records:
        key = record.key() or b""
        assert record.partition() == zlib.crc32(key) % topics.partitions, key
    sent = {record.key(): record.value() for record in records}
    for n in range(3):
        request = decode_request(sent[f"{prefix}{n}".encode()] or b"")
        assert request.id == f"{prefix}{n}"
        assert request.meta == {"client": "torchkafka-go-example", "n": n}
        assert request.deadline_ms is not None
        x = request.inputs["x"]
        assert isinstance(x, torch.Tensor)
        assert torch.equal(x, torch.tensor([n, n + 0.25, n + 0.5, n + 0.75]))
