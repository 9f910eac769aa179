"""The Dockerfiles and .dockerignore, checked offline: what each image runs, as whom, how it
is probed, and that every file a build copies reaches the build context."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from torchkafka.worker.config import OperationsSettings

ROOT = Path(__file__).parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
UID = 10001


@dataclass(frozen=True)
class Instruction:
    keyword: str
    flags: tuple[str, ...]
    args: str

    def flag_values(self, name: str) -> list[str]:
        prefix = f"--{name}="
        return [flag[len(prefix) :] for flag in self.flags if flag.startswith(prefix)]

    def flag(self, name: str) -> str | None:
        return next(iter(self.flag_values(name)), None)

    def exec_form(self) -> list[str]:
        words: list[str] = json.loads(self.args)
        return words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: continuations joined, comments and blank lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation runs past the end of the file"
    return lines


def split_flags(rest: str) -> tuple[tuple[str, ...], str]:
    flags: list[str] = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    return tuple(flags), rest


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def parse(path: Path) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = substitute(rest, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        if not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before the first FROM"
            key, _, default = rest.partition("=")
            global_args[key] = default
            continue
        flags, args = split_flags(rest.strip())
        stages[-1].instructions.append(Instruction(keyword, flags, args))
    return stages


def environment(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def build_args(stage: Stage) -> dict[str, str]:
    args = (instruction.args.partition("=") for instruction in stage.all("ARG"))
    return {key: value.strip('"') for key, _, value in args}


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = str(PurePosixPath(line.removeprefix("!").lstrip("/")))
        patterns.append((negated, glob_regex(cleaned)))
    return patterns


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            members = pattern[i + 1 : end]
            out += "[" + ("^" + members[1:] if members.startswith(("!", "^")) else members) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(relative: str) -> bool:
    """Whether .dockerignore keeps a path out of the context: the last pattern that
    matches it or one of its parent folders decides."""
    path = PurePosixPath(relative)
    candidates = [str(path), *(str(parent) for parent in path.parents if str(parent) != ".")]
    verdict = False
    for negated, regex in dockerignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def copy_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for instruction in stage.all("COPY") + stage.all("ADD"):
        if instruction.flag("from") is None:
            words = (
                instruction.exec_form()
                if instruction.args.startswith("[")
                else instruction.args.split()
            )
            sources += words[:-1]
    return sources


def stages_used(stage: Stage) -> set[str]:
    """What a stage takes files from: ``COPY --from`` and ``RUN --mount=...,from=``."""
    used = {source for copy in stage.all("COPY") for source in copy.flag_values("from")}
    for run in stage.all("RUN"):
        for mount in run.flag_values("mount"):
            options = dict(option.split("=", 1) for option in mount.split(","))
            used |= {options["from"]} if "from" in options else set()
    return used


def final(path: Path) -> Stage:
    return parse(path)[-1]


def test_the_dockerfile_parser_reads_continuations_flags_and_stages(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG V=3\nFROM python:${V}-slim AS build\n# note\nRUN --mount=type=cache,target=/c \\\n"
        "    echo a \\\n    && echo b\nFROM build\nUSER 1:1\n"
    )
    first, second = parse(dockerfile)
    assert (first.base, first.name, second.base) == ("python:3-slim", "build", "build")
    [run] = first.all("RUN")
    assert run.flag("mount") == "type=cache,target=/c"
    assert run.args == "echo a && echo b"
    assert second.last("USER").args == "1:1"


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    assert excluded(".git/config")
    assert not excluded("worker/app.py")
    assert excluded("worker/__pycache__/app.cpython-311.pyc")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".run/kafka/server.log",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/x",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        ".typecheck/torchkafka/worker",
        "torchkafka.egg-info/PKG-INFO",
        "tests/unit/worker/test_config.py",
        "bench/results.json",
        "docs/img/throughput.png",
        "deploy/local/kafka.sh",
        ".env",
    ],
)
def test_the_build_context_leaves_out_local_state(path: str) -> None:
    assert excluded(path)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_final_stage_runs_as_the_fixed_non_root_user(dockerfile: Path) -> None:
    stage = final(dockerfile)
    assert stage.last("USER").args == f"{UID}:{UID}"
    setup = " ".join(run.args for run in stage.all("RUN"))
    assert re.search(rf"groupadd --gid {UID} torchkafka\b", setup)
    assert re.search(rf"useradd --uid {UID} --gid {UID}\b.* torchkafka\b", setup)
    last_user = max(i for i, ins in enumerate(stage.instructions) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in stage.instructions[last_user:])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_healthcheck_gets_healthz_on_the_metrics_port_with_urllib(dockerfile: Path) -> None:
    healthcheck = final(dockerfile).last("HEALTHCHECK")
    kind, _, command = healthcheck.args.partition(" ")
    assert kind == "CMD"
    words: list[str] = json.loads(command)
    port = OperationsSettings().metrics_port
    assert words[:2] == ["python", "-c"]
    assert f"urllib.request.urlopen('http://127.0.0.1:{port}/healthz'" in words[2]
    assert "curl" not in healthcheck.args
    assert healthcheck.flag("start-period") is not None


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_exposes_the_metrics_port(dockerfile: Path) -> None:
    assert final(dockerfile).last("EXPOSE").args == str(OperationsSettings().metrics_port)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_entrypoint_is_the_torchkafka_command(dockerfile: Path) -> None:
    stage = final(dockerfile)
    assert stage.last("ENTRYPOINT").exec_form() == ["torchkafka"]
    assert stage.last("CMD").exec_form() == ["run", "--help"]
    assert PYPROJECT["project"]["scripts"]["torchkafka"] == "torchkafka.worker.cli:main"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_environment_is_unbuffered_and_leaves_omp_wait_policy_to_the_worker(
    dockerfile: Path,
) -> None:
    stage = final(dockerfile)
    assert environment(stage)["PYTHONUNBUFFERED"] == "1"
    assert "OMP_WAIT_POLICY" not in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_a_slim_final_stage_installs_the_wheel_built_in_an_earlier_stage(
    dockerfile: Path,
) -> None:
    *earlier, last = parse(dockerfile)
    names = {stage.name for stage in earlier}
    assert last.base.endswith("-slim")
    assert any("pip wheel" in run.args for stage in earlier for run in stage.all("RUN"))
    assert stages_used(last)
    assert stages_used(last) <= names
    assert any("/wheels/torchkafka-" in run.args for run in last.all("RUN"))
    assert environment(last)["VIRTUAL_ENV"] == "/opt/torchkafka"
    assert environment(last)["PATH"].startswith("/opt/torchkafka/bin:")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_build_stage_copies_everything_the_wheel_is_built_from(dockerfile: Path) -> None:
    copied = {PurePosixPath(source) for source in copy_sources(parse(dockerfile)[0])}
    package_dirs = PYPROJECT["tool"]["setuptools"]["package-dir"].values()
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], *package_dirs}
    assert {PurePosixPath(path) for path in needed} <= copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_and_reaches_the_build_context(dockerfile: Path) -> None:
    for stage in parse(dockerfile):
        for source in copy_sources(stage):
            path = ROOT / source
            assert path.exists(), source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            sent = [f for f in files if not excluded(f.relative_to(ROOT).as_posix())]
            assert sent, f"{source}: .dockerignore leaves none of it in the context"
            modules = [f for f in files if f.suffix in {".py", ".toml", ".md", ".typed"}]
            assert all(f in sent for f in modules), source


def test_the_wheel_builds_from_what_the_build_stage_receives(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for source in copy_sources(parse(DOCKER / "Dockerfile")[0]):
        path = ROOT / source
        for file in [path] if path.is_file() else path.rglob("*"):
            relative = file.relative_to(ROOT)
            if file.is_file() and not excluded(relative.as_posix()):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, context / relative)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [*pip, "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = (tmp_path / "wheels").glob("torchkafka-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        modules = {
            f"{package.replace('.', '/')}/{module.relative_to(ROOT / folder).as_posix()}"
            for module in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in module.parts
        }
        assert modules <= packaged, sorted(modules - packaged)


def test_both_images_build_the_wheel_the_same_way() -> None:
    cpu, cuda = (parse(dockerfile)[0] for dockerfile in DOCKERFILES)
    assert cpu == cuda


def test_the_cpu_image_takes_torch_from_the_cpu_wheel_index() -> None:
    stage = final(DOCKER / "Dockerfile")
    assert build_args(stage)["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert any(
        'pip install --index-url "$TORCH_INDEX" torch torchvision' in run.args
        for run in stage.all("RUN")
    )


def test_the_cuda_image_installs_the_project_extras_named_by_a_build_arg() -> None:
    stage = final(DOCKER / "Dockerfile.cuda")
    args = build_args(stage)
    assert args["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu")
    assert args["EXTRAS"] == ""
    assert "tensorrt" in PYPROJECT["project"]["optional-dependencies"]
    assert any('"${wheel}${EXTRAS:+[$EXTRAS]}"' in run.args for run in stage.all("RUN"))
    assert environment(stage)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
