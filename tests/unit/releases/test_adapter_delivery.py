"""Adapters reach an engine from an S3 store: registered into the bucket, synced and hashed
into the folder the engine reads, loaded from there — or refused when the bucket was changed.

The store is a real S3-compatible server (moto); the engines are the fake one, which here
reads the path it is handed, as vLLM does.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from adapters.files import adapter_sha256
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.s3 import artifact_settings

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> Settings:
    artifacts = artifact_settings(
        s3_endpoint, f"s3://{s3_bucket}/adapters", cache_dir=tmp_path / "engine-adapters"
    )
    return settings.model_copy(update={"artifacts": artifacts})


@pytest.fixture
def fake_engine(fake_engine: FakeEngine) -> FakeEngine:
    fake_engine.reads_lora_path = True
    return fake_engine


async def _register(
    client: httpx.AsyncClient, headers: dict[str, str], folder: Path
) -> dict[str, str]:
    response = await client.post(
        "/adapters", json={"path": str(folder), "domain": "law"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def _stage(
    client: httpx.AsyncClient, headers: dict[str, str], adapter_id: str
) -> httpx.Response:
    return await client.post("/snapshots", json={"adapters": {"law": adapter_id}}, headers=headers)


def _fetches(runtime: Runtime, outcome: str, slot: str = "green") -> float:
    value = runtime.metrics.registry.get_sample_value(
        "twinloop_artifact_fetches_total", {"slot": slot, "outcome": outcome}
    )
    return value or 0.0


async def test_a_stage_loads_a_verified_copy_synced_from_the_bucket(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    runtime: Runtime, settings: Settings, s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    adapter = await _register(client, admin_headers, write_fake_adapter(tmp_path / "src"))
    sha256 = adapter["sha256"]

    staged = await _stage(client, admin_headers, adapter["id"])

    assert staged.status_code == 201, staged.text
    copy = tmp_path / "engine-adapters" / sha256
    assert fake_engine.calls("/v1/load_lora_adapter") == [
        {"lora_name": adapter["name"], "lora_path": str(copy)}
    ]
    assert fake_engine.loaded_adapters["green"] == {adapter["name"]}
    assert adapter_sha256(copy) == sha256
    # The trainer's and the gateway's side wrote only to the bucket.
    assert not (settings.data_dir / "adapters").exists()
    async with runtime.sessionmaker() as session:
        record = await runtime.registry.get(session, adapter["id"])
    assert record.path == f"s3://{s3_bucket}/adapters/{sha256}"
    assert _fetches(runtime, "fetched") == 1
    seconds = runtime.metrics.registry.get_sample_value(
        "twinloop_artifact_fetch_seconds_count", {"slot": "green"}
    )
    assert seconds == 1


async def test_an_engine_that_restarted_reloads_from_the_verified_copy(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    runtime: Runtime, tmp_path: Path,
) -> None:  # fmt: skip
    adapter = await _register(client, admin_headers, write_fake_adapter(tmp_path / "src"))
    assert (await _stage(client, admin_headers, adapter["id"])).status_code == 201
    fake_engine.loaded_adapters["green"].clear()

    assert await runtime.releases.reconcile(runtime.releases.state.shadow_slot) == [adapter["name"]]
    assert (_fetches(runtime, "fetched"), _fetches(runtime, "cached")) == (1, 1)


async def test_an_object_changed_in_the_bucket_never_reaches_an_engine(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_engine: FakeEngine,
    runtime: Runtime, s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    adapter = await _register(client, admin_headers, write_fake_adapter(tmp_path / "src"))
    store = runtime.registry.store
    key = f"adapters/{adapter['sha256']}/{WEIGHTS}"
    client_s3 = store._client  # type: ignore[attr-defined]
    body = client_s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    client_s3.put_object(Bucket=s3_bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))

    response = await _stage(client, admin_headers, adapter["id"])

    assert response.status_code == 409, response.text
    assert response.json()["error"] == "AdapterIntegrityError"
    assert "will not be loaded" in response.json()["detail"]
    assert fake_engine.calls("/v1/load_lora_adapter") == []
    assert not (tmp_path / "engine-adapters" / adapter["sha256"]).exists()
    assert _fetches(runtime, "refused") == 1
    status = (await client.get("/status", headers=admin_headers)).json()
    assert status["generation"] == 1


async def test_status_names_the_store_and_each_slots_fetch_step(
    client: httpx.AsyncClient, admin_headers: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    status = (await client.get("/status", headers=admin_headers)).json()

    local = {
        "fetch": "local",
        "cache_dir": str(tmp_path / "engine-adapters"),
        "engine_dir": str(tmp_path / "engine-adapters"),
    }
    assert status["artifacts"] == {
        "store": f"s3://{s3_bucket}/adapters",
        "backend": "s3",
        "slots": {"blue": local, "green": local},
    }
