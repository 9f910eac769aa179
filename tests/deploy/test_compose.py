"""docker-compose.yml, checked offline: valid against the compose specification, and the
stack users rely on (scaling, start-up order, one pipeline file, stopping, monitoring)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from torchkafka.worker.config import Timeouts, WorkerConfig, load_config

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "compose" / "gpu.yml"
TORCHKAFKA_SERVICES = ("topics", "worker", "producer", "reader")
ONE_SHOTS = ("topics", "producer", "reader")
DEPENDENCIES = {
    "topics": {"kafka": "service_healthy"},
    "worker": {"topics": "service_completed_successfully", "redis": "service_healthy"},
    "producer": {
        "topics": "service_completed_successfully",
        "reader": "service_started",
        "worker": "service_healthy",
    },
    "reader": {"topics": "service_completed_successfully"},
    "grafana": {"prometheus": "service_started"},
}
DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path)


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


SERVICES = compose_services()


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def config_file(name: str) -> Path:
    """The host file behind the ``--config`` a torchkafka service's command names."""
    service = SERVICES[name]
    return bind_mounts(service)[option(service["command"], "--config")]


def pipeline() -> WorkerConfig:
    return load_config(config_file("worker"), {}, {})


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    declared = service.get("depends_on", {})
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in declared.items()}


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(path) for path in paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_files_are_valid_against_the_compose_specification() -> None:
    result = schema_check(COMPOSE, GPU_OVERRIDE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_an_invalid_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  worker:\n    image: x\n    stop_grace_period: [60]\n")
    assert schema_check(broken).returncode != 0


def test_the_worker_scales_without_a_container_name_or_host_ports() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_waits_for_what_it_needs(name: str) -> None:
    assert dependencies(SERVICES[name]) == DEPENDENCIES.get(name, {})


def test_services_waited_on_for_health_have_a_healthcheck() -> None:
    waited = {
        dependency
        for service in SERVICES.values()
        for dependency, condition in dependencies(service).items()
        if condition == "service_healthy"
    }
    assert waited == {"kafka", "redis", "worker"}
    assert "test" in SERVICES["kafka"]["healthcheck"]
    assert "test" in SERVICES["redis"]["healthcheck"]
    assert "healthcheck" not in SERVICES["worker"]  # the image's HEALTHCHECK (test_images.py)


@pytest.mark.parametrize("name", ONE_SHOTS)
def test_one_shot_services_are_never_restarted_and_probe_nothing(name: str) -> None:
    service = SERVICES[name]
    assert service["restart"] == "no"
    assert service["healthcheck"] == {"disable": True}


def test_only_the_demo_services_need_the_demo_profile() -> None:
    profiled = {
        name: service["profiles"] for name, service in SERVICES.items() if "profiles" in service
    }
    assert profiled == {"producer": ["demo"], "reader": ["demo"]}


@pytest.mark.parametrize("name", TORCHKAFKA_SERVICES)
def test_torchkafka_services_build_the_cpu_image_from_the_repository(name: str) -> None:
    service = SERVICES[name]
    assert service["image"] == "torchkafka:cpu"
    assert service["build"]["context"] == "."
    assert (ROOT / service["build"]["dockerfile"]) == ROOT / "deploy" / "docker" / "Dockerfile"


@pytest.mark.parametrize("name", TORCHKAFKA_SERVICES)
def test_torchkafka_services_read_the_one_pipeline_file(name: str) -> None:
    assert config_file(name) == ROOT / "deploy" / "compose" / "pipeline.toml"


def test_the_topics_service_applies_the_declaration_from_the_file_alone() -> None:
    command = SERVICES["topics"]["command"]
    assert command[:2] == ["topics", "apply"]
    assert "--yes" in command
    flags = {word for word in command if word.startswith("--")}
    assert flags <= {"--config", "--yes", "--timeout"}


def test_the_worker_runs_the_pipeline_file_alone() -> None:
    worker = SERVICES["worker"]
    assert worker["command"] == ["run", "--config", "/etc/torchkafka/pipeline.toml"]
    assert "environment" not in worker
    assert "entrypoint" not in worker


def test_the_pipeline_declares_the_topics_the_demo_uses() -> None:
    config = pipeline()
    assert (config.input_topic, config.output_topic, config.dead_letter_topic) == (
        "requests",
        "results",
        "requests.dlq",
    )
    assert config.topics.partitions == 6
    assert option(SERVICES["producer"]["command"], "--topic") == config.input_topic
    assert option(SERVICES["reader"]["command"], "--topic") == config.output_topic


def test_the_demo_producer_sends_what_the_model_takes() -> None:
    config = pipeline()
    producer = SERVICES["producer"]["command"]
    assert config.model.input_shape is not None
    assert option(producer, "--shape") == ",".join(map(str, config.model.input_shape))
    assert option(producer, "--dtype") == config.model.input_dtype
    assert option(producer, "--count") == option(SERVICES["reader"]["command"], "--count")


def test_the_pipeline_reaches_kafka_and_redis_inside_the_project() -> None:
    config = pipeline()
    environment = SERVICES["kafka"]["environment"]
    advertised = environment["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"INTERNAL://{config.kafka.bootstrap}" in advertised
    assert environment["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    redis = urlsplit(config.dedup.redis_url)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    assert config.topics.replication_factor == environment["KAFKA_DEFAULT_REPLICATION_FACTOR"]


def test_the_stop_grace_period_exceeds_the_workers_stopping_budget() -> None:
    config = pipeline()
    budget = Timeouts.derive(
        config.operations.shutdown_timeout_s, config.dedup.shutdown_redis_wait_s
    )
    assert budget.stop_grace_s == config.timeouts.stop_grace_s
    worker = SERVICES["worker"]
    assert seconds(worker["stop_grace_period"]) > budget.stop_grace_s
    assert "stop_signal" not in worker
    assert worker["restart"] == "unless-stopped"


def test_the_worker_serves_its_probes_and_metrics_to_other_containers() -> None:
    config = pipeline()
    assert config.operations.metrics_port == 9100
    assert config.operations.metrics_host == "0.0.0.0"  # noqa: S104
    assert config.workers == 1


def test_redis_keeps_the_done_marks() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "everysec"
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert "redis-data:/data" in redis["volumes"]


def test_stateful_services_keep_their_data_in_declared_volumes() -> None:
    declared = set(load_yaml(COMPOSE)["volumes"])
    named = {
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and not volume.startswith((".", "/"))
    }
    assert named == declared == {"kafka-data", "redis-data", "prometheus-data"}


def test_published_ports_listen_on_localhost_only() -> None:
    published = {name: service["ports"] for name, service in SERVICES.items() if "ports" in service}
    assert set(published) == {"kafka", "redis", "prometheus", "grafana"}
    for ports in published.values():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), ports


@pytest.mark.parametrize(
    ("name", "target"),
    [(name, target) for name, service in SERVICES.items() for target in bind_mounts(service)],
)
def test_mounted_paths_exist_in_the_repository(name: str, target: str) -> None:
    source = bind_mounts(SERVICES[name])[target]
    assert source.exists(), f"{name} mounts {source}, which is missing"
    assert source.is_relative_to(ROOT)
    if PurePosixPath(target).suffix:
        assert source.is_file()
    else:
        assert source.is_dir()


def test_prometheus_finds_every_worker_replica_through_dockers_dns() -> None:
    scrape = load_yaml(bind_mounts(SERVICES["prometheus"])["/etc/prometheus/prometheus.yml"])
    [discovery] = [sd for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    assert discovery["names"] == ["worker"]
    assert discovery["type"] == "A"
    assert discovery["port"] == pipeline().operations.metrics_port


def test_prometheus_loads_rule_files_that_are_mounted() -> None:
    mounts = bind_mounts(SERVICES["prometheus"])
    config_path = PurePosixPath("/etc/prometheus/prometheus.yml")
    assert f"--config.file={config_path}" in SERVICES["prometheus"]["command"]
    rule_files = load_yaml(mounts[str(config_path)])["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        assert str(config_path.parent / rule_file) in mounts, rule_file


def test_grafana_reads_dashboards_where_they_are_mounted() -> None:
    mounts = bind_mounts(SERVICES["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path)["providers"]
    ]
    paths = {provider["options"]["path"] for provider in providers}
    assert "/var/lib/grafana/dashboards" in paths
    assert list(mounts["/var/lib/grafana/dashboards"].glob("*.json"))


def test_grafanas_prometheus_data_source_is_the_compose_service() -> None:
    provisioning = bind_mounts(SERVICES["grafana"])["/etc/grafana/provisioning"]
    sources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in load_yaml(path)["datasources"]
        if source["type"] == "prometheus"
    ]
    assert sources
    for source in sources:
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == ("prometheus", 9090)


def test_grafana_lets_anonymous_viewers_in() -> None:
    environment = SERVICES["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_the_gpu_override_builds_the_cuda_image_and_reserves_a_gpu_per_worker() -> None:
    worker = load_yaml(GPU_OVERRIDE)["services"]["worker"]
    assert worker["image"] != SERVICES["worker"]["image"]
    assert worker["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert worker["environment"]["TORCHKAFKA_DEVICE"] == "cuda"
