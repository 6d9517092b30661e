"""Release changes never activate a dead engine."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.operations.conftest import Register
from twinloop.testing.engine import FakeEngine

Headers = dict[str, str]


async def _status(client: httpx.AsyncClient, headers: Headers) -> dict[str, object]:
    response = await client.get("/status", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _stage(
    client: httpx.AsyncClient, headers: Headers, adapters: dict[str, object]
) -> str:  # fmt: skip
    response = await client.post("/snapshots", json={"adapters": adapters}, headers=headers)
    assert response.status_code == 201, response.text
    snapshot_id: str = response.json()["id"]
    return snapshot_id


# -- engine health -------------------------------------------------------------------------


@pytest.mark.parametrize("with_adapter", [False, True])
async def test_a_swap_never_activates_an_engine_that_is_down(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register,
    fake_engine: FakeEngine, with_adapter: bool,
) -> None:  # fmt: skip
    if with_adapter:  # the engine was listed while staging, so the listing is fresh
        await _stage(client, admin_headers, {"law": (await register("law"))["id"]})
    before = await _status(client, admin_headers)
    fake_engine.down.add("green")

    swapped = await client.post(
        "/swap", json={"generation": before["generation"]}, headers=admin_headers
    )

    assert swapped.status_code == 503, swapped.text
    assert swapped.json()["error"] == "EngineUnavailableError"
    assert "green" in swapped.json()["detail"]
    after = await _status(client, admin_headers)
    assert (after["generation"], after["active_slot"]) == (before["generation"], "blue")
    fake_engine.down.clear()
    retried = await client.post(
        "/swap", json={"generation": before["generation"]}, headers=admin_headers
    )
    assert retried.status_code == 200, retried.text


async def test_a_rollback_never_activates_an_engine_that_is_down(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register,
    fake_engine: FakeEngine,
) -> None:  # fmt: skip
    await _stage(client, admin_headers, {"law": (await register("law"))["id"]})
    swapped = await client.post("/swap", json={"generation": 2}, headers=admin_headers)
    assert swapped.status_code == 200, swapped.text
    fake_engine.down.add("blue")

    rolled = await client.post(
        "/rollback", json={"generation": swapped.json()["generation"]}, headers=admin_headers
    )

    assert rolled.status_code == 503, rolled.text
    assert (await _status(client, admin_headers))["active_slot"] == "green"
