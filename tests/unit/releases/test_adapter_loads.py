"""Staging an adapter that another process loads into the engine at the same moment."""

from __future__ import annotations

import asyncio

import httpx

from tests.shadow_changes import LOAD_ADAPTER, until
from tests.unit.conftest import Register
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine


async def test_an_adapter_another_process_loaded_meanwhile_is_staged(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    runtime: Runtime,
    fake_engine: FakeEngine,
    register: Register,
) -> None:
    """The engine lists the adapter as missing, then answers the load "already loaded": the
    trainer's stage or another gateway's reconcile got there first. Staging goes on, and the
    listing after the load confirms the adapter is served."""
    adapter = await register("law")
    shadow = runtime.releases.state.shadow_slot.value
    held = fake_engine.hold(LOAD_ADAPTER)
    staging = asyncio.create_task(
        client.post("/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers)
    )
    await until(lambda: fake_engine.calls(LOAD_ADAPTER))

    fake_engine.loaded_adapters.setdefault(shadow, set()).add(str(adapter["name"]))
    held.set()
    response = await staging

    assert response.status_code == 201, response.text
    state = runtime.releases.state
    served = state.serving(state.shadow_slot)
    assert (served.snapshot_id, served.adapter_ids) == (
        response.json()["id"],
        {"law": adapter["id"]},
    )
    assert fake_engine.loaded_adapters[shadow] == {adapter["name"]}
