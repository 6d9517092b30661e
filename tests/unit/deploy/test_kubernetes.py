"""deploy/k8s: every overlay renders, passes the Kubernetes schemas, and keeps the project's rules.

The overlays are rendered by tests/unit/deploy/kustomize.py; where kubectl is installed, its
`kubectl kustomize` must render exactly the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.unit.deploy import kustomize
from tests.unit.deploy.support import (
    K8S,
    OVERLAYS,
    image_is_pinned,
    settings_from,
    unknown_settings,
)
from twinloop.settings import PLACEHOLDER_ADMIN_TOKEN, Settings, Slot

Resource = dict[str, Any]
# The oldest Kubernetes the manifests are written for.
KUBERNETES_VERSION = "1.30.0"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
ENGINES = {Slot.BLUE: "vllm-blue", Slot.GREEN: "vllm-green"}
TWINLOOP_IMAGE = "twinloop"


class Rendered:
    """One overlay's resources, looked up by kind and name."""

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = resources

    def get(self, kind: str, name: str) -> Resource:
        found = [r for r in self.resources if (r["kind"], r["metadata"]["name"]) == (kind, name)]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any((r["kind"], r["metadata"]["name"]) == (kind, name) for r in self.resources)

    def of_kind(self, *kinds: str) -> list[Resource]:
        return [r for r in self.resources if r["kind"] in kinds]

    def env(self) -> dict[str, str]:
        """What `envFrom: twinloop-config, twinloop-secrets` gives a twinloop container."""
        config = self.get("ConfigMap", "twinloop-config")["data"]
        secrets = self.get("Secret", "twinloop-secrets")["stringData"]
        return {**config, **secrets}


def _key(resource: Resource) -> tuple[str, str, str]:
    meta = resource["metadata"]
    return resource["kind"], meta.get("namespace", ""), meta["name"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Iterator[tuple[str, Rendered]]:
    name: str = request.param
    yield name, Rendered(kustomize.render(K8S / "overlays" / name))


def _pod(workload: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: Resource, *, init: bool = True) -> list[dict[str, Any]]:
    pod = _pod(workload)
    return [*(pod.get("initContainers", []) if init else []), *pod["containers"]]


def _main(workload: Resource) -> dict[str, Any]:
    container: dict[str, Any] = _pod(workload)["containers"][0]
    return container


def _twinloop_workloads(rendered: Rendered) -> list[Resource]:
    return [
        w
        for w in rendered.of_kind(*WORKLOADS)
        if _main(w)["image"].split(":")[0].rsplit("/", 1)[-1] == TWINLOOP_IMAGE
        and w["metadata"]["labels"]["app.kubernetes.io/component"] != "engine"
    ]


def _argument(container: dict[str, Any], flag: str) -> str | None:
    for arg in container.get("args", []):
        if arg.startswith(f"{flag}="):
            return str(arg.split("=", 1)[1])
    return None


def _served_model(container: dict[str, Any]) -> str:
    """The model an engine serves: `--model=...` (CPU entry point) or `vllm serve MODEL`."""
    model = _argument(container, "--model")
    return model if model is not None else str(container["args"][0])


def _settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = rendered.env()
    if env["TWINLOOP_ENVIRONMENT"] != "development":
        env["TWINLOOP_ADMIN_TOKEN"] = "a-real-token"
    return settings_from(env, monkeypatch)


def _kubectl_kustomize(root: Path) -> dict[tuple[str, str, str], Resource]:
    if shutil.which("kubectl") is None:
        pytest.skip(
            "kubectl is not installed, and no package the project can install carries a "
            "kustomize with components; tests/unit/deploy/kustomize.py rendered the overlays "
            "for every other check"
        )
    printed = subprocess.run(
        ["kubectl", "kustomize", str(root)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {_key(r): r for r in yaml.safe_load_all(printed) if r}


def test_kubectl_renders_what_the_tests_render(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    by_kubectl = _kubectl_kustomize(K8S / "overlays" / name)
    assert by_kubectl == {_key(r): r for r in rendered.resources}


def test_every_resource_passes_the_kubernetes_schema(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for resource in rendered.resources:
        if resource["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in kubernetes-validate (checked below)
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_every_container_has_resources_and_a_pinned_image(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for workload in rendered.of_kind(*WORKLOADS):
        for container in _containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
            assert image_is_pinned(container["image"]), where


def test_long_running_containers_have_probes_on_their_own_ports(
    overlay: tuple[str, Rendered],
) -> None:
    _, rendered = overlay
    for workload in rendered.of_kind("Deployment", "StatefulSet"):
        for container in _pod(workload)["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{workload['metadata']['name']}: no {probe}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in ports, f"{workload['metadata']['name']}: {port}"


def test_services_select_pods_with_their_target_ports(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        pods = [
            w
            for w in rendered.of_kind("Deployment", "StatefulSet")
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for pod in pods:
                names = {p["name"] for c in _pod(pod)["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, service["metadata"]["name"]


def test_every_reference_resolves(overlay: tuple[str, Rendered]) -> None:
    """ConfigMaps, Secrets and claims named by a pod, and the targets of HPAs and PDBs."""
    _, rendered = overlay
    for workload in rendered.of_kind(*WORKLOADS):
        pod = _pod(workload)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                  if "persistentVolumeClaim" in v}  # fmt: skip
        for claim in claims:
            assert rendered.has("PersistentVolumeClaim", claim), claim
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in source:
                        assert rendered.has(kind, source[ref]["name"]), source
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert rendered.has("Secret", ref["name"]), ref
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        assert rendered.has(hpa["spec"]["scaleTargetRef"]["kind"], hpa["metadata"]["name"])
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        target = rendered.get("Deployment", pdb["metadata"]["name"])
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_twinloop_variable_is_a_setting_and_they_build(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rendered = overlay
    names = set(rendered.env())
    for workload in rendered.of_kind(*WORKLOADS):
        names |= {v["name"] for c in _containers(workload) for v in c.get("env", [])}
    assert not unknown_settings(names)
    env = rendered.env()
    if env["TWINLOOP_ENVIRONMENT"] != "development":
        # A forgotten secret fails loudly: the placeholder token is refused.
        assert env["TWINLOOP_ADMIN_TOKEN"] == PLACEHOLDER_ADMIN_TOKEN
        with pytest.raises(ValueError, match="TWINLOOP_ADMIN_TOKEN"):
            settings_from(env, monkeypatch)
    settings = _settings(rendered, monkeypatch)
    assert settings.engines.external and settings.rag.external
    assert settings.gateway.host == "0.0.0.0"
    assert settings.trainer.metrics_host == "0.0.0.0"
    assert settings.database_url is not None


def test_settings_point_at_the_rendered_services(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rendered = overlay
    settings = _settings(rendered, monkeypatch)

    def service_port(name: str) -> int:
        ports = rendered.get("Service", name)["spec"]["ports"]
        return int(ports[0]["port"])

    for slot, service in ENGINES.items():
        url = urlsplit(settings.engines.base_url(slot))
        assert (url.hostname, url.port) == (service, service_port(service))
    rag = settings.rag
    assert rag.chroma_port == service_port(rag.chroma_host)
    assert service_port("gateway") == settings.gateway.port
    assert service_port("trainer") == settings.trainer.metrics_port
    database = urlsplit(settings.database_url or "")
    if rendered.has("StatefulSet", "postgres"):
        assert (database.hostname, database.port) == ("postgres", service_port("postgres"))
        credentials = rendered.get("Secret", "postgres-credentials")["stringData"]
        assert (database.username, database.password, database.path) == (
            credentials["POSTGRES_USER"],
            credentials["POSTGRES_PASSWORD"],
            f"/{credentials['POSTGRES_DB']}",
        )


def test_engines_serve_the_configured_model_with_runtime_lora(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, rendered = overlay
    settings = _settings(rendered, monkeypatch)
    for service in ENGINES.values():
        engine = rendered.get("Deployment", service)
        # One engine per slot: the gateway loads adapters into the engine behind the URL.
        assert engine["spec"]["replicas"] == 1
        assert engine["spec"]["strategy"]["type"] == "Recreate"
        container = _main(engine)
        assert "--enable-lora" in container["args"]
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert _argument(container, "--served-model-name") == settings.models.served_name
        assert _served_model(container) == settings.base_model_path
        assert _argument(container, "--max-lora-rank") == str(settings.engines.max_lora_rank)
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if name.startswith("gpu"):
            assert gpus is not None and gpus == int(
                _argument(container, "--tensor-parallel-size") or 1
            )
        else:
            assert gpus is None


def test_the_data_volume_is_where_the_settings_put_the_data_directory(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engines read the prepared base model, and the trainer writes its scratch, there."""
    _, rendered = overlay
    data_dir = str(_settings(rendered, monkeypatch).data_dir)
    workloads = [
        *_twinloop_workloads(rendered),
        *(rendered.get("Deployment", s) for s in ENGINES.values()),
    ]
    for workload in workloads:
        if workload["kind"] == "Job":
            continue  # migrations touch only the database
        volumes = {v["name"]: v for v in _pod(workload)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in _main(workload).get("volumeMounts", [])}
        assert data_dir in mounts, workload["metadata"]["name"]
        claim = volumes[mounts[data_dir]]["persistentVolumeClaim"]["claimName"]
        assert claim == "twinloop-data", workload["metadata"]["name"]


def _container(workload: Resource, args: list[str]) -> dict[str, Any]:
    found = [c for c in _pod(workload)["containers"] if c.get("args") == args]
    assert len(found) == 1, f"{workload['metadata']['name']}: {args}"
    return found[0]


def test_each_engine_loads_adapters_its_fetch_agent_put_on_its_own_volume(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway (and the trainer, which stages too) asks a slot's agent through the engine's
    Service, then hands vLLM the path the agent answers: `engine_dir/<sha256>`."""
    _, rendered = overlay
    settings = _settings(rendered, monkeypatch)
    for slot, name in ENGINES.items():
        engine = rendered.get("Deployment", name)
        agent_container = _container(engine, ["adapters", "fetch-agent"])
        own = {v["name"]: v["value"] for v in agent_container.get("env", [])}
        agent = settings_from({**rendered.env(), **own, "TWINLOOP_ADMIN_TOKEN": "t"}, monkeypatch)
        assert agent.artifacts.agent_host == "0.0.0.0" and agent.artifacts.cache_dir is not None
        port = {p["name"]: p["containerPort"] for p in agent_container["ports"]}["fetch"]
        assert port == agent.artifacts.agent_port
        url = urlsplit(settings.artifacts.fetch_url(slot) or "")
        service = {p["name"]: p for p in rendered.get("Service", name)["spec"]["ports"]}["fetch"]
        assert (url.hostname, url.port, service["targetPort"]) == (name, service["port"], "fetch")
        writes = {m["mountPath"]: m for m in agent_container["volumeMounts"]}
        written = writes[str(agent.artifacts.cache_dir)]
        assert not written.get("readOnly")
        volume = {v["name"]: v for v in _pod(engine)["volumes"]}[written["name"]]
        assert "emptyDir" in volume, "the engine's own disk, not a shared volume"
        reads = {m["name"]: m for m in _main(engine)["volumeMounts"]}[written["name"]]
        engine_dir = agent.artifacts.engine_dir or str(agent.artifacts.cache_dir)
        assert (reads["mountPath"], reads["readOnly"]) == (engine_dir, True)


def test_twinloop_stores_adapters_in_the_object_store_the_overlay_runs(
    overlay: tuple[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rendered = overlay
    artifacts = _settings(rendered, monkeypatch).artifacts
    assert (artifacts.store or "").startswith("s3://")
    assert artifacts.s3_access_key_id is not None and artifacts.s3_secret_access_key is not None
    if not rendered.has("StatefulSet", "minio"):
        return  # bring your own S3: the overlay's secret and config name it
    endpoint = urlsplit(artifacts.s3_endpoint_url or "")
    port = rendered.get("Service", "minio")["spec"]["ports"][0]["port"]
    assert (endpoint.hostname, endpoint.port) == ("minio", port)
    credentials = rendered.get("Secret", "minio-credentials")["stringData"]
    assert artifacts.s3_access_key_id.get_secret_value() == credentials["MINIO_ROOT_USER"]
    assert artifacts.s3_secret_access_key.get_secret_value() == credentials["MINIO_ROOT_PASSWORD"]
    job = rendered.get("Job", "twinloop-adapter-store")
    assert _main(job)["args"] == ["adapters", "check-store", "--create"]


def test_gateway_replicas_probes_budget_and_autoscaling(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    gateway = rendered.get("Deployment", "gateway")
    assert gateway["spec"]["replicas"] >= 2
    assert rendered.get("HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] >= 2
    assert rendered.has("PodDisruptionBudget", "gateway")
    container = _main(gateway)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_migrations_run_as_a_job_the_gateway_and_trainer_wait_for(
    overlay: tuple[str, Rendered],
) -> None:
    _, rendered = overlay
    job = rendered.get("Job", "twinloop-migrate")
    assert _main(job)["args"] == ["db", "upgrade"]
    for name in ("gateway", "trainer"):
        init = _pod(rendered.get("Deployment", name))["initContainers"]
        assert init[0]["name"] == "wait-for-migrations"
        assert "alembic -c /app/alembic.ini current" in init[0]["command"][-1]


def test_one_trainer_that_resumes_its_own_cycles(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    trainer = rendered.get("Deployment", "trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    # A restarted container must not get its predecessor's PID (cycles' owner tags).
    assert _pod(trainer)["shareProcessNamespace"] is True


def test_metrics_pods_carry_scrape_annotations(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for name in ("gateway", "trainer", *ENGINES.values()):
        workload = rendered.get("Deployment", name)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for p in _main(workload)["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports


def test_the_servicemonitor_component_renders_on_an_overlay(tmp_path: Path) -> None:
    overlay = K8S / "overlays" / "gpu"
    component = K8S / "components" / "servicemonitor"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "twinloop",
                "resources": [os.path.relpath(overlay, tmp_path)],
                "components": [os.path.relpath(component, tmp_path)],
            }
        )
    )
    rendered = Rendered(kustomize.render(tmp_path))
    if shutil.which("kubectl") is not None:
        assert _kubectl_kustomize(tmp_path) == {_key(r): r for r in rendered.resources}
    monitor = rendered.get("ServiceMonitor", "twinloop")
    assert monitor["metadata"]["namespace"] == "twinloop"
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = [
        s for s in rendered.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]  # fmt: skip
    assert {s["metadata"]["name"] for s in scraped} == {"gateway", "trainer", *ENGINES.values()}
    for service in scraped:
        assert {p["name"] for p in service["spec"]["ports"]} & ports
