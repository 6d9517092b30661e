"""deploy/compose.yaml (and compose.8b.yaml over it): valid for docker-compose, and its services,
settings, scrape targets and Grafana provisioning agree with each other."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.unit.deploy.support import (
    COMPOSE_ENV,
    DASHBOARDS,
    DEPLOY,
    image_is_pinned,
    interpolate,
    require_tool,
    settings_from,
    unknown_settings,
)
from twinloop.settings import Settings, Slot

Service = dict[str, Any]
STACKS = {"compose.yaml": ["compose.yaml"], "compose.8b.yaml": ["compose.yaml", "compose.8b.yaml"]}
ENGINES = {Slot.BLUE: "vllm-blue", Slot.GREEN: "vllm-green"}
AGENTS = {Slot.BLUE: "adapters-blue", Slot.GREEN: "adapters-green"}
ONE_SHOT = {"models", "migrate", "model-download", "adapter-store"}


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(interpolate((DEPLOY / name).read_text(), COMPOSE_ENV))
    return document


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's override rules as far as deploy/ needs them: mappings merge, the rest replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[list[str], dict[str, Service]]]:
    files: list[str] = STACKS[request.param]
    project: dict[str, Any] = {}
    for name in files:
        document = {k: v for k, v in _load(name).items() if not k.startswith("x-")}
        project = _merge(project, document)
    yield files, project["services"]


def _environment(service: Service) -> dict[str, str]:
    return {name: str(value) for name, value in service.get("environment", {}).items()}


def _settings(service: Service, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(_environment(service), monkeypatch)


def _empty_file(folder: Path) -> Path:
    """An env file for docker-compose, so that a developer's deploy/.env is not read."""
    path = folder / "empty.env"
    path.write_text("")
    return path


def _mounts(service: Service) -> dict[str, str]:
    """Source to target of each `source:target[:mode]` volume."""
    return dict(tuple(v.split(":")[:2]) for v in service["volumes"])


def _argument(command: list[str], flag: str) -> str | None:
    for arg in command:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def test_docker_compose_accepts_the_stack(
    stack: tuple[list[str], dict[str, Service]], tmp_path: Path
) -> None:
    files, _ = stack
    docker_compose = require_tool(
        "docker-compose", "Debian's docker-compose; `make test` installs it where it may"
    )
    arguments = [a for name in files for a in ("-f", str(DEPLOY / name))]
    result = subprocess.run(
        [docker_compose, "--env-file", str(_empty_file(tmp_path)), *arguments, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **COMPOSE_ENV},
    )
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    docker_compose = require_tool(
        "docker-compose", "Debian's docker-compose; `make test` installs it where it may"
    )
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    result = subprocess.run(
        [
            docker_compose,
            "--env-file",
            str(_empty_file(tmp_path)),
            "-f",
            str(DEPLOY / "compose.yaml"),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0 and "deploy/.env" in result.stderr


def test_env_example_names_every_required_variable() -> None:
    text = "".join((DEPLOY / name).read_text() for name in ("compose.yaml", "compose.8b.yaml"))
    required = {part.split(":?")[0].rsplit("${", 1)[1] for part in text.split("}") if ":?" in part}
    example = (DEPLOY / "env.example").read_text().splitlines()
    assert required == set(COMPOSE_ENV)
    assert required <= {line.split("=")[0] for line in example if "=" in line}


def test_services_wait_for_dependencies_that_can_say_so(
    stack: tuple[list[str], dict[str, Service]],
) -> None:
    _, services = stack
    for name, service in services.items():
        assert image_is_pinned(service["image"]), name
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
        else:
            assert "healthcheck" in service and service["restart"] == "unless-stopped", name
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"


def test_every_twinloop_variable_is_a_setting_and_they_build(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    for name, service in services.items():
        env = _environment(service)
        assert not unknown_settings(set(env)), name
        if any(key.startswith("TWINLOOP_") for key in env):
            settings = _settings(service, monkeypatch)
            assert settings.environment == "production"
            assert settings.engines.external and settings.rag.external


def test_settings_point_at_the_services(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    for name in ("gateway", "trainer"):
        settings = _settings(services[name], monkeypatch)
        for slot, engine in ENGINES.items():
            url = urlsplit(settings.engines.base_url(slot))
            command = services[engine]["command"]
            assert (url.hostname, url.port) == (engine, int(_argument(command, "--port") or 0))
        assert settings.rag.chroma_host in services and settings.rag.chroma_port == 8000
        database = urlsplit(settings.database_url or "")
        postgres = services["postgres"]["environment"]
        assert (database.hostname, database.port) == ("postgres", 5432)
        assert (database.username, database.password, database.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            f"/{postgres['POSTGRES_DB']}",
        )
    published = services["gateway"]["ports"][0].rsplit(":", 1)[1]
    assert int(published) == _settings(services["gateway"], monkeypatch).gateway.port


def test_engines_serve_the_configured_model_with_runtime_lora_on_a_gpu(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    settings = _settings(services["gateway"], monkeypatch)
    assert _settings(services["trainer"], monkeypatch).base_model_path == settings.base_model_path
    for engine in ENGINES.values():
        service = services[engine]
        command = service["command"]
        assert service["image"].startswith("vllm/vllm-openai:")
        assert "--enable-lora" in command
        assert service["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert command[0] == settings.base_model_path
        assert _argument(command, "--served-model-name") == settings.models.served_name
        assert _argument(command, "--max-lora-rank") == str(settings.engines.max_lora_rank)
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert "ports" not in service, "vLLM's endpoints are no auth boundary"


def test_the_base_model_is_read_by_the_engines_where_twinloop_prepares_it(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    data_dir = str(_settings(services["gateway"], monkeypatch).data_dir)
    for name in ("gateway", "trainer", "models", *ENGINES.values()):
        assert _mounts(services[name]).get("twinloop-data") == data_dir, name


def test_every_twinloop_process_uses_the_one_object_store(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    minio = services["minio"]
    for name in ("gateway", "trainer", "adapter-store", *AGENTS.values()):
        artifacts = _settings(services[name], monkeypatch).artifacts
        assert (artifacts.store or "").startswith("s3://"), name
        endpoint = urlsplit(artifacts.s3_endpoint_url or "")
        assert (endpoint.hostname, endpoint.port) == ("minio", 9000), name
        assert artifacts.s3_access_key_id is not None and artifacts.s3_secret_access_key
        assert (
            artifacts.s3_access_key_id.get_secret_value() == minio["environment"]["MINIO_ROOT_USER"]
        )
        assert (
            artifacts.s3_secret_access_key.get_secret_value()
            == minio["environment"]["MINIO_ROOT_PASSWORD"]
        )
    assert services["adapter-store"]["command"] == ["adapters", "check-store", "--create"]
    assert "minio-data:/data" in minio["volumes"]


def test_each_engine_loads_adapters_its_fetch_agent_put_on_its_own_volume(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway (and the trainer, which stages too) asks a slot's agent, then hands the
    engine the path the agent answers: `engine_dir/<sha256>`, which must be its volume."""
    _, services = stack
    for slot, engine in ENGINES.items():
        agent_service = services[AGENTS[slot]]
        agent = _settings(agent_service, monkeypatch).artifacts
        assert agent_service["command"] == ["adapters", "fetch-agent"]
        assert agent.agent_host == "0.0.0.0" and agent.cache_dir is not None
        for name in ("gateway", "trainer"):
            url = urlsplit(_settings(services[name], monkeypatch).artifacts.fetch_url(slot) or "")
            assert (url.hostname, url.port) == (AGENTS[slot], agent.agent_port), name
        assert f"127.0.0.1:{agent.agent_port}/healthz" in agent_service["healthcheck"]["test"][-1]
        written = [v for v in _volumes(agent_service) if v[1] == str(agent.cache_dir)]
        assert len(written) == 1 and written[0][2] == "rw"
        volume = written[0][0]
        read = [v for v in _volumes(services[engine]) if v[0] == volume]
        assert read == [(volume, agent.engine_dir or str(agent.cache_dir), "ro")], engine
        other = ENGINES[slot.other]
        assert volume not in {v[0] for v in _volumes(services[other])}, other
        condition = services["gateway"]["depends_on"][AGENTS[slot]]
        assert condition == {"condition": "service_healthy"}


def _volumes(service: Service) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each `source:target[:mode]` volume."""
    found = []
    for volume in service["volumes"]:
        parts = volume.split(":")
        found.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return found


def test_prometheus_scrapes_each_service_on_its_port(
    stack: tuple[list[str], dict[str, Service]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, services = stack
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        target: (job["job_name"], group.get("labels", {}))
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    settings = _settings(services["gateway"], monkeypatch)
    expected = {
        f"gateway:{settings.gateway.port}": "twinloop-gateway",
        f"trainer:{settings.trainer.metrics_port}": "twinloop-trainer",
    }
    for slot, engine in ENGINES.items():
        expected[f"{engine}:{_argument(services[engine]['command'], '--port')}"] = "vllm"
        assert targets[f"{engine}:8000"][1] == {"slot": slot.value}
    assert {t: job for t, (job, _) in targets.items()} == expected
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_is_provisioned_from_the_dashboards_folder(
    stack: tuple[list[str], dict[str, Service]],
) -> None:
    _, services = stack
    mounts = _mounts(services["grafana"])
    provisioning = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards.yml").read_text())
    path = provisioning["providers"][0]["options"]["path"]
    assert mounts["../dashboards"] == path
    datasources = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources.yml").read_text())
    source = datasources["datasources"][0]
    url = urlsplit(source["url"])
    assert url.hostname in services and url.port == 9090
    for name, target in (("datasources", "datasources"), ("dashboards", "dashboards")):
        assert mounts[f"../dashboards/provisioning/{name}.yml"].startswith(
            f"/etc/grafana/provisioning/{target}/"
        )
    # The dashboards name the datasource by this uid.
    dashboards = "".join(p.read_text() for p in DASHBOARDS.glob("*.json"))
    assert f'"uid": "{source["uid"]}"' in dashboards
