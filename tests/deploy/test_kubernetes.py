"""The Kubernetes manifests (deploy/k8s), rendered and checked offline.

Each overlay is rendered exactly as `kustomize build` would (the kustomize
library itself, pinned, through deploy/k8s/tools/kustomize-build.sh, built
once per machine into .run/bin/). Every core object is validated against the
Kubernetes OpenAPI schemas that kubernetes-validate ships (strict: unknown
fields refused), the KEDA ScaledObject against deploy/k8s/schemas/, a schema
written from KEDA's documentation (kubernetes-validate knows no CRDs). Then
the properties the deployment depends on are checked against the worker's
own configuration, loaded from the rendered ConfigMap with torchkafka's
loader and the container's environment, as a pod would load it.

No cluster is involved: nothing here shows that a cluster accepts or runs
the objects (docs/kubernetes.md, "What was not run here").
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from torchkafka.worker.cli import build_parser
from torchkafka.worker.config import WorkerConfig, load_config
from torchkafka.worker.config._sections import Timeouts, group_membership
from torchkafka.worker.ops import Health, health_endpoints

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
BUILD = K8S / "tools" / "kustomize-build.sh"
KEDA_SCHEMA = K8S / "schemas" / "keda-scaledobject.schema.json"
OVERLAYS = ("cpu", "gpu")

#: The oldest Kubernetes minor the manifests are meant for, and the newest the
#: installed kubernetes-validate ships: both must accept every core object.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
#: Objects validated by kubernetes-validate; the ScaledObject has its own schema.
CORE_KINDS = {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service"}

WORKER = "torchkafka-worker"
POD_NAME = "torchkafka-worker-7d9f8b6c5-x2k4q"  # what metadata.name looks like

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One overlay's objects, by kind and name."""

    overlay: str
    objects: list[Manifest]

    def get(self, kind: str, name: str | None = None) -> Manifest:
        found = [
            o
            for o in self.objects
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
        ]
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind} {name or ''}"
        return found[0]

    @property
    def deployment(self) -> Manifest:
        return self.get("Deployment", WORKER)

    @property
    def worker(self) -> Manifest:
        """The worker container."""
        return container(self.deployment, "torchkafka")

    @property
    def job(self) -> Manifest:
        return self.get("Job", "torchkafka-topics")

    def config(self, tmp_path: Path, pod: Manifest, name: str) -> WorkerConfig:
        """The worker configuration container ``name`` of ``pod`` loads: the file
        it is given (from the mounted ConfigMap) and its environment."""
        spec = pod["spec"]["template"]["spec"]
        box = container(pod, name)
        args = build_parser().parse_args(box["args"])
        config_path = Path(args.config)
        [mount] = [m for m in box["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        config_map = self.get("ConfigMap", volume["configMap"]["name"])
        local = tmp_path / f"{self.overlay}-{name}" / config_path.name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(config_map["data"][config_path.name])
        return load_config(local, container_env(box), {})


def container(workload: Manifest, name: str) -> Manifest:
    boxes: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    [found] = [c for c in boxes if c["name"] == name]
    return found


def container_env(box: Manifest) -> dict[str, str]:
    """The container's environment as the pod sees it (field references resolved)."""
    env: dict[str, str] = {}
    for var in box.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, var
            env[var["name"]] = POD_NAME
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="session")
def kustomize_build() -> Callable[[Path], list[Manifest]]:
    """Render a kustomization; the first call builds the pinned tool (cached in .run/bin)."""
    built = list((ROOT / ".run" / "bin").glob("kustomize-build-*"))
    assert shutil.which("go") or built, (
        "Go (1.26 or newer) is missing: it builds the pinned kustomize library once"
    )

    def render(directory: Path) -> list[Manifest]:
        done = subprocess.run(
            [str(BUILD), str(directory)], capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr
        objects = [o for o in YAML(typ="safe").load_all(done.stdout) if o is not None]
        plain: list[Manifest] = json.loads(json.dumps(objects))  # plain dicts and lists
        return plain

    return render


@pytest.fixture(scope="session")
def rendered(kustomize_build: Callable[[Path], list[Manifest]]) -> dict[str, Rendered]:
    return {o: Rendered(o, kustomize_build(K8S / "overlays" / o)) for o in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


@pytest.fixture(scope="session")
def keda_validator() -> Any:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_overlays_render_the_same_objects_without_a_namespace(
    rendered: dict[str, Rendered],
) -> None:
    for result in rendered.values():
        kinds = sorted(o["kind"] for o in result.objects)
        assert kinds == sorted([*CORE_KINDS, "ScaledObject"]), result.overlay
        assert all("namespace" not in o["metadata"] for o in result.objects)


def test_the_renderer_is_kustomize_itself(
    kustomize_build: Callable[[Path], list[Manifest]], tmp_path: Path
) -> None:
    """The tool applies kustomize's own rules: the legacy order (a ConfigMap
    before the workloads that use it), generated names, and its errors."""
    names = [o["kind"] for o in kustomize_build(K8S / "overlays" / "cpu")]
    assert names.index("ConfigMap") < names.index("Deployment")
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    done = subprocess.run([str(BUILD), str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "missing.yaml" in done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_are_valid_kubernetes(overlay: Rendered, version: str) -> None:
    for manifest in overlay.objects:
        if manifest["kind"] in CORE_KINDS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_refuses_an_unknown_field(overlay: Rendered) -> None:
    """The check above would catch a misspelt field (strict mode bites)."""
    broken = copy.deepcopy(overlay.deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_scaled_object_matches_the_keda_schema(overlay: Rendered, keda_validator: Any) -> None:
    keda_validator.validate(overlay.get("ScaledObject"))


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("spec", "maxReplicas", 6),  # HPA's name, not KEDA's
        ("trigger", "lagThreshold", 200),  # KEDA wants strings
        ("trigger", "consumergroup", "torchkafka"),
        ("trigger", "offsetResetPolicy", "oldest"),
    ],
)
def test_the_keda_schema_refuses_mistakes(
    rendered: dict[str, Rendered], keda_validator: Any, where: str, key: str, value: object
) -> None:
    broken = copy.deepcopy(rendered["cpu"].get("ScaledObject"))
    target = broken["spec"] if where == "spec" else broken["spec"]["triggers"][0]["metadata"]
    target[key] = value
    assert not keda_validator.is_valid(broken)


def test_the_config_map_is_a_valid_worker_config(overlay: Rendered, tmp_path: Path) -> None:
    config = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    assert config.workers == 1  # one process a pod: the budget below is one process's
    assert (config.input_topic, config.output_topic, config.dead_letter_topic) == (
        "requests",
        "results",
        "requests.dlq",
    )
    assert config.topics.partitions == 6


def test_probes_use_the_workers_endpoints_and_port(overlay: Rendered, tmp_path: Path) -> None:
    worker = overlay.worker
    config = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    [port] = worker["ports"]
    assert port == {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    assert port["containerPort"] == config.operations.metrics_port
    # Every interface: the kubelet and Prometheus reach it at the pod's address.
    assert config.operations.metrics_host == "0.0.0.0"  # noqa: S104
    # The numbers of docs/worker.md's example.
    expected = {
        "startupProbe": ("/healthz", 5, 60),
        "livenessProbe": ("/healthz", 10, 3),
        "readinessProbe": ("/readyz", 5, None),
    }
    for probe, (path, period, failures) in expected.items():
        spec = worker[probe]
        assert spec["httpGet"] == {"path": path, "port": "metrics"}, probe
        assert spec["periodSeconds"] == period, probe
        assert spec.get("failureThreshold") == failures, probe
    # The startup probe's window covers model loading plus the worker's own
    # wait for Kafka and Redis, after which it exits by itself.
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > (
        config.operations.startup_timeout_s
    )


def test_the_worker_serves_the_probed_paths() -> None:
    """The paths the probes ask for are the worker's own endpoints: its health
    server answers them 200 once the worker is live and ready (503 before)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    health = Health(threading.Event())

    def status(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return error.code

    with health_endpoints("127.0.0.1", free, health, CollectorRegistry()) as port:
        assert (status(port, "/healthz"), status(port, "/readyz")) == (503, 503)
        health.beat()
        health.model_loaded()
        health.joined()
        assert (status(port, "/healthz"), status(port, "/readyz")) == (200, 200)
        assert status(port, "/metrics") == 200
        assert status(port, "/health") == 404


def test_the_grace_period_covers_the_stopping_budget(overlay: Rendered, tmp_path: Path) -> None:
    config = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    timeouts = Timeouts.derive(
        config.operations.shutdown_timeout_s, config.dedup.shutdown_redis_wait_s
    )
    assert timeouts == config.timeouts
    assert timeouts.stop_grace_s == 50.0  # 30 s drain + 10 s Redis + 10 s margin
    grace = overlay.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > timeouts.stop_grace_s
    assert grace == 60


def test_static_membership_comes_from_the_pod_name(overlay: Rendered, tmp_path: Path) -> None:
    [instance] = [v for v in overlay.worker["env"] if v["name"] == "TORCHKAFKA_GROUP_INSTANCE_ID"]
    assert instance["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    assert config.group_instance_id == POD_NAME
    assert config.group_protocol == "classic"  # static membership is refused otherwise
    assert group_membership(config, 0)["group.instance.id"] == f"{POD_NAME}-0"
    # Long enough for a container restarted in place to come back (docs/worker.md
    # suggests 60 s); librdkafka's default is 45 s.
    assert int(config.kafka.consumer["session.timeout.ms"]) == 60_000


def test_the_pod_runs_as_non_root_on_a_read_only_root(overlay: Rendered) -> None:
    for workload, name in ((overlay.deployment, "torchkafka"), (overlay.job, "topics")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        box = container(workload, name)
        assert box["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        [tmp] = [m for m in box["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
        [volume] = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
        assert "emptyDir" in volume
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(box["resources"][kind]), (name, kind)


def test_the_cpu_overlay_runs_the_cpu_image_on_its_cores(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    cpu = rendered["cpu"]
    worker = cpu.worker
    assert worker["image"] == "torchkafka:cpu"
    assert worker["args"] == ["run", "--config", "/etc/torchkafka/pipeline.toml"]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    config = cpu.config(tmp_path, cpu.deployment, "torchkafka")
    assert config.model.device == "cpu"
    assert config.model.spec == "torchvision:resnet18"
    # torch sees every CPU of the node: its threads are the cores the pod gets.
    assert config.model.torch_threads == int(worker["resources"]["limits"]["cpu"])
    assert worker["resources"]["requests"]["cpu"] == worker["resources"]["limits"]["cpu"]


def test_the_gpu_overlay_asks_for_a_gpu_and_the_cuda_image(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    gpu = rendered["gpu"]
    worker = gpu.worker
    assert worker["image"] == "torchkafka:cuda"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu.config(tmp_path, gpu.deployment, "torchkafka").model.device == "cuda"
    # Everything else is the base's: same pipeline, same probes, same grace.
    cpu = rendered["cpu"]
    assert gpu.get("ConfigMap") == cpu.get("ConfigMap")
    for key in ("startupProbe", "livenessProbe", "readinessProbe", "args", "ports"):
        assert worker[key] == cpu.worker[key], key
    # The topics Job needs no GPU and keeps the CPU image.
    assert container(gpu.job, "topics") == container(cpu.job, "topics")


def test_the_service_and_the_pdb_select_the_worker_pods_only(overlay: Rendered) -> None:
    worker_labels = overlay.deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = overlay.job["spec"]["template"]["metadata"]["labels"]
    deployment_selector = overlay.deployment["spec"]["selector"]["matchLabels"]
    pdb = overlay.get("PodDisruptionBudget")
    service = overlay.get("Service", WORKER)
    assert pdb["spec"]["maxUnavailable"] == 1
    for selector in (deployment_selector, pdb["spec"]["selector"]["matchLabels"]):
        assert selects(selector, worker_labels)
        assert not selects(selector, job_labels)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment_selector
    assert selects(service["spec"]["selector"], worker_labels)
    assert not selects(service["spec"]["selector"], job_labels)
    # Headless, one address per worker, for Prometheus to scrape each one.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": "metrics"}
    ]


def test_keda_scales_the_deployment_up_to_the_partitions(overlay: Rendered, tmp_path: Path) -> None:
    config = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    scaled = overlay.get("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": overlay.deployment["metadata"]["name"],
    }
    assert "replicas" not in overlay.deployment["spec"]  # KEDA owns the count
    assert scaled["minReplicaCount"] == 1
    assert scaled["maxReplicaCount"] == config.topics.partitions
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config.group_id
    assert meta["topic"] == config.input_topic
    assert meta["bootstrapServers"] == config.kafka.bootstrap
    assert meta["offsetResetPolicy"] == "earliest"
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"


def test_the_topics_job_applies_the_same_config(overlay: Rendered, tmp_path: Path) -> None:
    job = overlay.job
    topics = container(job, "topics")
    args = build_parser().parse_args(topics["args"])
    assert (args.command, args.action, args.yes) == ("topics", "apply", True)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    worker = overlay.config(tmp_path, overlay.deployment, "torchkafka")
    made = overlay.config(tmp_path, job, "topics")
    assert made.topics == worker.topics
    assert made.kafka == worker.kafka
    assert (made.input_topic, made.output_topic, made.dead_letter_topic) == (
        worker.input_topic,
        worker.output_topic,
        worker.dead_letter_topic,
    )
