"""The fetch agent beside an engine: verified copies on the engine's disk, on the gateway's ask.

The agent runs in-process (ASGI) over a real S3-compatible server (moto); the gateway reaches
it, and the fake engines, through one mock transport, as it reaches both over the network.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from adapters.artifacts import ArtifactStore
from adapters.artifacts.s3 import S3Store
from adapters.files import adapter_sha256
from twinloop.fetch_agent import create_fetch_agent
from twinloop.settings import Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.gateway import in_process_gateway
from twinloop.testing.s3 import artifact_settings

WEIGHTS = "adapter_model.safetensors"
AGENT_URLS = {"blue": "http://agent-blue:8400", "green": "http://agent-green:8400"}


@pytest.fixture
def store_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/adapters"


@pytest.fixture
def store(s3_endpoint: str, store_url: str) -> Iterator[S3Store]:
    opened = S3Store.from_url(store_url, artifact_settings(s3_endpoint, store_url))
    yield opened
    opened.close()


def _agent_settings(settings: Settings, s3_endpoint: str, store_url: str, disk: Path) -> Settings:
    artifacts = artifact_settings(s3_endpoint, store_url, cache_dir=disk)
    return settings.model_copy(update={"artifacts": artifacts})


@pytest.fixture
async def agents(
    settings: Settings, s3_endpoint: str, store_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, FastAPI]]:
    """One agent per engine, each filling its own engine's disk."""
    started: dict[str, FastAPI] = {}
    async with contextlib.AsyncExitStack() as stack:
        for slot in AGENT_URLS:
            disk = tmp_path / f"{slot}-engine-disk"
            app = create_fetch_agent(_agent_settings(settings, s3_endpoint, store_url, disk))
            await stack.enter_async_context(app.router.lifespan_context(app))
            started[slot] = app
        yield started


def _agent_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")


# --- the agent alone ----------------------------------------------------------------------


async def test_the_agent_fetches_once_and_answers_the_engines_path(
    settings: Settings, s3_endpoint: str, store_url: str, store: ArtifactStore, tmp_path: Path
) -> None:
    sha256 = store.put(write_fake_adapter(tmp_path / "src")).sha256
    disk = tmp_path / "disk"
    agent_settings = _agent_settings(settings, s3_endpoint, store_url, disk)
    viewed = agent_settings.artifacts.model_copy(update={"engine_dir": "/vllm/adapters"})
    app = create_fetch_agent(agent_settings.model_copy(update={"artifacts": viewed}))

    async with app.router.lifespan_context(app), _agent_client(app) as agent:
        first = await agent.put(f"/adapters/{sha256}")
        again = await agent.put(f"/adapters/{sha256}")
        health = await agent.get("/healthz")

    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["path"] == f"/vllm/adapters/{sha256}"
    assert (first.json()["fetched"], again.json()["fetched"]) == (True, False)
    assert adapter_sha256(disk / sha256) == sha256
    assert health.json() == {
        "store": store_url,
        "backend": "s3",
        "cache_dir": str(disk),
        "engine_dir": "/vllm/adapters",
    }


async def test_the_agent_refuses_a_changed_object_and_names_the_error(
    settings: Settings, s3_endpoint: str, store_url: str, store: S3Store, tmp_path: Path
) -> None:
    sha256 = store.put(write_fake_adapter(tmp_path / "src")).sha256
    store._client.put_object(
        Bucket=store.bucket, Key=f"adapters/{sha256}/{WEIGHTS}", Body=b"other weights"
    )
    app = create_fetch_agent(_agent_settings(settings, s3_endpoint, store_url, tmp_path / "disk"))

    async with app.router.lifespan_context(app), _agent_client(app) as agent:
        refused = await agent.put(f"/adapters/{sha256}")
        not_a_hash = await agent.put("/adapters/NOT-A-SHA256")
        missing = await agent.put(f"/adapters/{'d' * 64}")

    assert refused.status_code == 409
    assert refused.json()["error"] == "AdapterIntegrityError"
    assert not (tmp_path / "disk" / sha256).exists()
    assert (not_a_hash.status_code, not_a_hash.json()["error"]) == (422, "InvalidRequestError")
    assert (missing.status_code, missing.json()["error"]) == (409, "AdapterIntegrityError")


async def test_the_agent_clears_what_a_killed_fetch_left_when_it_starts(
    settings: Settings, s3_endpoint: str, store_url: str, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    leftover = disk / f".{'e' * 64}.fetch-abc123"
    leftover.mkdir(parents=True)
    (leftover / "adapter_config.json").write_text("{")
    app = create_fetch_agent(_agent_settings(settings, s3_endpoint, store_url, disk))

    async with app.router.lifespan_context(app):
        assert list(disk.iterdir()) == []


# --- the gateway through the agents -------------------------------------------------------


@pytest.fixture
def agent_urls() -> dict[str, str]:
    """Where the gateway looks for each engine's agent (a test may name one that is gone)."""
    return AGENT_URLS


@pytest.fixture
def gateway_settings(
    settings: Settings, s3_endpoint: str, store_url: str, agent_urls: dict[str, str]
) -> Settings:
    artifacts = artifact_settings(
        s3_endpoint,
        store_url,
        blue_fetch_url=agent_urls["blue"],
        green_fetch_url=agent_urls["green"],
    )
    return settings.model_copy(update={"artifacts": artifacts})


@pytest.fixture
async def gateway(
    gateway_settings: Settings, fake_engine: FakeEngine, agents: dict[str, FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose engines (fake, reading the paths they get) each have an agent."""
    fake_engine.reads_lora_path = True
    routes = {f"agent-{slot}": httpx.ASGITransport(app=app) for slot, app in agents.items()}

    async def network(request: httpx.Request) -> httpx.Response:
        agent = routes.get(request.url.host)
        if agent is not None:
            return await agent.handle_async_request(request)
        if request.url.host.startswith("agent-"):
            raise httpx.ConnectError("connection refused", request=request)
        return await fake_engine.handle(request)

    async with in_process_gateway(gateway_settings, httpx.MockTransport(network)) as client:
        yield client


async def _register_and_stage(
    gateway: httpx.AsyncClient, headers: dict[str, str], folder: Path
) -> tuple[dict[str, str], httpx.Response]:
    registered = await gateway.post(
        "/adapters", json={"path": str(folder), "domain": "law"}, headers=headers
    )
    assert registered.status_code == 201, registered.text
    adapter: dict[str, str] = registered.json()
    staged = await gateway.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=headers
    )
    return adapter, staged


async def test_the_gateway_loads_what_the_engines_agent_put_on_its_disk(
    gateway: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter, staged = await _register_and_stage(
        gateway, admin_headers, write_fake_adapter(tmp_path / "src")
    )

    assert staged.status_code == 201, staged.text
    on_green = tmp_path / "green-engine-disk" / adapter["sha256"]
    assert fake_engine.calls("/v1/load_lora_adapter") == [
        {"lora_name": adapter["name"], "lora_path": str(on_green)}
    ]
    assert adapter_sha256(on_green) == adapter["sha256"]
    assert not (tmp_path / "blue-engine-disk" / adapter["sha256"]).exists()
    status = (await gateway.get("/status", headers=admin_headers)).json()
    assert status["artifacts"]["slots"]["green"] == {
        "fetch": "agent",
        "agent_url": AGENT_URLS["green"],
    }


async def test_a_changed_object_reported_by_the_agent_is_refused_by_the_gateway(
    gateway: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    store: S3Store, tmp_path: Path,
) -> None:  # fmt: skip
    folder = write_fake_adapter(tmp_path / "src")
    sha256 = adapter_sha256(folder)
    store.put(folder)
    store._client.put_object(
        Bucket=store.bucket, Key=f"adapters/{sha256}/{WEIGHTS}", Body=b"other weights"
    )
    # Registering stores it again, which repairs the bucket; change it after that.
    registered = await gateway.post(
        "/adapters", json={"path": str(folder), "domain": "law"}, headers=admin_headers
    )
    store._client.put_object(
        Bucket=store.bucket, Key=f"adapters/{sha256}/{WEIGHTS}", Body=b"other weights"
    )

    staged = await gateway.post(
        "/snapshots", json={"adapters": {"law": registered.json()["id"]}}, headers=admin_headers
    )

    assert staged.status_code == 409, staged.text
    assert staged.json()["error"] == "AdapterIntegrityError"
    assert fake_engine.calls("/v1/load_lora_adapter") == []


@pytest.mark.parametrize("agent_urls", [{**AGENT_URLS, "green": "http://agent-gone:8400"}])
async def test_an_agent_that_is_down_fails_the_stage_and_changes_nothing(
    gateway: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:  # fmt: skip
    _, staged = await _register_and_stage(
        gateway, admin_headers, write_fake_adapter(tmp_path / "src")
    )

    assert staged.status_code == 503, staged.text
    assert staged.json()["error"] == "AdapterFetchError"
    assert "cannot be reached" in staged.json()["detail"]
    assert fake_engine.calls("/v1/load_lora_adapter") == []
    assert (await gateway.get("/status", headers=admin_headers)).json()["generation"] == 1
    metrics = (await gateway.get("/metrics")).text
    assert 'twinloop_artifact_fetches_total{outcome="failed",slot="green"} 1.0' in metrics
