"""Release changes that cannot undo each other, activate a dead engine or serve a tainted adapter.

`/swap` and `/rollback` name the generation they change (or `"latest"`, refused when the
release moves between the read and the write); a plain rollback's target is found by query
and never brings back a snapshot a rollback left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import update

from tests.unit.conftest import Register
from twinloop.db.models import AdapterVersion, Release
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine

Headers = dict[str, str]


async def _status(client: httpx.AsyncClient, headers: Headers) -> dict[str, object]:
    response = await client.get("/status", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _active_snapshot(client: httpx.AsyncClient, headers: Headers) -> str:
    status = await _status(client, headers)
    slots: list[dict[str, str]] = status["slots"]  # type: ignore[assignment]
    return next(s["snapshot_id"] for s in slots if s["role"] == "active")


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def _stage(
    client: httpx.AsyncClient, headers: Headers, adapters: dict[str, object]
) -> str:  # fmt: skip
    response = await client.post("/snapshots", json={"adapters": adapters}, headers=headers)
    assert response.status_code == 201, response.text
    snapshot_id: str = response.json()["id"]
    return snapshot_id


async def _change(
    client: httpx.AsyncClient, headers: Headers, path: str, **body: object
) -> httpx.Response:
    return await client.post(path, json={"generation": "latest", **body}, headers=headers)


async def _taint(runtime: Runtime, adapter_id: object) -> None:
    async with runtime.sessionmaker.begin() as session:
        await session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.id == adapter_id)
            .values(tainted=True, tainted_reason="trained on deleted feedback f-1")
        )


# -- the expected generation ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/swap", "/rollback"])
async def test_a_change_without_a_generation_is_422(
    client: httpx.AsyncClient, admin_headers: Headers, path: str
) -> None:
    for body in ({}, {"reason": "no generation"}, {"generation": None},
                 {"generation": "newest"}, {"generation": 0}):  # fmt: skip
        response = await client.post(path, json=body, headers=admin_headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "ValidationError"
        assert "generation" in response.json()["detail"], body
    no_body = await client.post(path, headers=admin_headers)
    assert no_body.status_code == 422, no_body.text
    assert (await _status(client, admin_headers))["generation"] == 1


async def test_a_generation_that_has_passed_is_409_for_swap_and_rollback(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    first = await client.post("/swap", json={"generation": 1}, headers=admin_headers)
    again = await client.post("/swap", json={"generation": 1}, headers=admin_headers)
    rolled = await client.post("/rollback", json={"generation": 1}, headers=admin_headers)

    assert first.status_code == 200, first.text
    assert first.json()["generation"] == 2
    for response in (again, rolled):
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "ReleaseConflictError"
        assert "generation 2, not 1" in response.json()["detail"]
    status = await _status(client, admin_headers)
    assert (status["generation"], status["active_slot"]) == (2, "green")


async def test_latest_swaps_when_nothing_else_changes(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    swapped = await _change(client, admin_headers, "/swap", reason="by hand")

    assert swapped.status_code == 200, swapped.text
    assert (swapped.json()["generation"], swapped.json()["active_slot"]) == (2, "green")


@pytest.mark.parametrize("path", ["/swap", "/rollback"])
async def test_latest_is_refused_when_a_change_lands_between_its_read_and_its_write(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register,
    fake_engine: FakeEngine, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:  # fmt: skip
    base = await _active_snapshot(client, admin_headers)
    if path == "/rollback":  # something to roll back from: a staged adapter, swapped in
        adapter = await register("law")
        await _stage(client, admin_headers, {"law": adapter["id"]})
        assert (await _change(client, admin_headers, "/swap")).status_code == 200
    before = await _status(client, admin_headers)
    reads: list[int] = []
    read_latest = runtime.releases.current_generation

    async def reading() -> int:
        generation = await read_latest()
        reads.append(generation)
        return generation

    monkeypatch.setattr(runtime.releases, "current_generation", reading)
    engine_check = fake_engine.hold("/health")
    checks = len(fake_engine.calls("/health"))
    first = asyncio.create_task(_change(client, admin_headers, path, reason="operator 1"))
    # The first change has read "latest" and holds the release at its engine check ...
    await _until(lambda: len(fake_engine.calls("/health")) == checks + 1)
    second = asyncio.create_task(_change(client, admin_headers, path, reason="operator 2"))
    # ... and the second has read the same "latest" before the first is written.
    await _until(lambda: len(reads) == 2)
    engine_check.set()
    responses = [await first, await second]

    assert reads == [before["generation"]] * 2
    assert [r.status_code for r in responses] == [200, 409], [r.text for r in responses]
    assert responses[1].json()["error"] == "ReleaseConflictError"
    assert f"not {before['generation']}" in responses[1].json()["detail"]
    after = await _status(client, admin_headers)
    assert after["generation"] == before["generation"] + 1  # type: ignore[operator]
    assert after["active_slot"] != before["active_slot"]
    if path == "/rollback":  # the bad snapshot did not come back
        assert await _active_snapshot(client, admin_headers) == base


async def test_staging_with_a_generation_that_has_passed_is_409_and_shadow_keeps_its_snapshot(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register
) -> None:
    adapter = await register("law")
    staged = await _stage(client, admin_headers, {"law": adapter["id"]})  # generation 2

    restaged = await client.post(
        f"/snapshots/{staged}/stage", json={"generation": 1}, headers=admin_headers
    )
    created = await client.post(
        "/snapshots", json={"adapters": {"law": None}, "generation": 1}, headers=admin_headers
    )
    current = await client.post(
        "/snapshots", json={"adapters": {"law": None}, "generation": 2}, headers=admin_headers
    )

    for response in (restaged, created):
        assert response.status_code == 409, response.text
        assert "generation 2, not 1" in response.json()["detail"]
    assert current.status_code == 201, current.text
    status = await _status(client, admin_headers)
    slots: list[dict[str, str]] = status["slots"]  # type: ignore[assignment]
    assert status["generation"] == 3
    assert next(s["snapshot_id"] for s in slots if s["slot"] == "green") == current.json()["id"]


# -- the rollback target ------------------------------------------------------------------


async def test_a_second_plain_rollback_does_not_bring_back_what_the_first_left(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register
) -> None:
    base = await _active_snapshot(client, admin_headers)
    adapter = await register("law")
    bad = await _stage(client, admin_headers, {"law": adapter["id"]})
    assert (await _change(client, admin_headers, "/swap")).status_code == 200
    first = await _change(client, admin_headers, "/rollback", reason="users unhappy")
    assert first.status_code == 200, first.text
    assert first.json()["active_snapshot_id"] == base

    second = await _change(client, admin_headers, "/rollback", reason="me too")

    assert second.status_code == 409, second.text
    assert "no earlier active snapshot" in second.json()["detail"]
    assert bad in second.json()["detail"]  # named, so an operator can choose it on purpose
    assert await _active_snapshot(client, admin_headers) == base
    named = await _change(client, admin_headers, "/rollback", snapshot_id=bad)
    assert named.status_code == 200, named.text
    assert named.json()["active_snapshot_id"] == bad


async def test_rollbacks_go_back_one_activation_at_a_time(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register
) -> None:
    base = await _active_snapshot(client, admin_headers)
    one = await _stage(client, admin_headers, {"law": (await register("law", seed=1))["id"]})
    assert (await _change(client, admin_headers, "/swap")).status_code == 200  # green: one
    two = await _stage(client, admin_headers, {"law": (await register("law", seed=2))["id"]})
    assert (await _change(client, admin_headers, "/swap")).status_code == 200  # blue: two

    back_to_one = await _change(client, admin_headers, "/rollback")
    back_to_base = await _change(client, admin_headers, "/rollback")

    assert back_to_one.status_code == 200, back_to_one.text
    assert back_to_one.json()["active_snapshot_id"] == one
    assert back_to_base.status_code == 200, back_to_base.text
    assert back_to_base.json()["active_snapshot_id"] == base  # not `two`, which it undid
    assert two != base


async def test_a_plain_rollback_finds_its_target_after_hundreds_of_releases(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register, runtime: Runtime
) -> None:
    base = await _active_snapshot(client, admin_headers)
    staged = await _stage(client, admin_headers, {"law": (await register("law"))["id"]})
    swapped = await _change(client, admin_headers, "/swap")
    assert swapped.status_code == 200, swapped.text
    generation: int = swapped.json()["generation"]
    # Every ingest batch stages one release; 250 of them since the swap.
    async with runtime.sessionmaker.begin() as session:
        for i in range(1, 251):
            session.add(
                Release(generation=generation + i, active_slot="green", blue_snapshot_id=base,
                        green_snapshot_id=staged, actor="ingest", reason="ingest: new documents")
            )  # fmt: skip
    await runtime.releases.refresh()  # or the gateway's watcher took it first
    assert runtime.releases.state.generation == generation + 250

    rolled = await client.post(
        "/rollback", json={"generation": generation + 250}, headers=admin_headers
    )

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active_snapshot_id"] == base
    assert rolled.json()["generation"] == generation + 251


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


# -- tainted adapters ------------------------------------------------------------------------


async def test_a_swap_refuses_a_shadow_whose_adapter_was_tainted_after_staging(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register, runtime: Runtime
) -> None:
    adapter = await register("law")
    await _stage(client, admin_headers, {"law": adapter["id"]})
    await _taint(runtime, adapter["id"])

    for body in ({"generation": 2}, {"generation": 2, "force": True}):
        swapped = await client.post("/swap", json=body, headers=admin_headers)
        assert swapped.status_code == 409, swapped.text
        assert swapped.json()["error"] == "ReleaseConflictError"
        assert "tainted" in swapped.json()["detail"]
        assert str(adapter["name"]) in swapped.json()["detail"]
    status = await _status(client, admin_headers)
    assert (status["generation"], status["active_slot"]) == (2, "blue")


async def test_staging_an_existing_snapshot_with_a_tainted_adapter_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register,
    runtime: Runtime, fake_engine: FakeEngine,
) -> None:  # fmt: skip
    adapter = await register("law")
    tainted = await _stage(client, admin_headers, {"law": adapter["id"]})
    clean = await _stage(client, admin_headers, {"law": None})  # green leaves the adapter
    await _taint(runtime, adapter["id"])

    staged = await client.post(f"/snapshots/{tainted}/stage", headers=admin_headers)

    assert staged.status_code == 409, staged.text
    assert "tainted" in staged.json()["detail"]
    status = await _status(client, admin_headers)
    slots: list[dict[str, str]] = status["slots"]  # type: ignore[assignment]
    assert next(s["snapshot_id"] for s in slots if s["slot"] == "green") == clean
    assert adapter["name"] not in fake_engine.loaded_adapters["green"]


async def test_a_rollback_never_goes_back_to_a_tainted_adapter(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register, runtime: Runtime
) -> None:
    adapter = await register("law")
    tainted = await _stage(client, admin_headers, {"law": adapter["id"]})
    assert (await _change(client, admin_headers, "/swap")).status_code == 200  # green: tainted
    clean = await _stage(client, admin_headers, {"law": None})  # into blue
    assert (await _change(client, admin_headers, "/swap")).status_code == 200  # blue: clean
    await _taint(runtime, adapter["id"])

    plain = await _change(client, admin_headers, "/rollback")  # green still holds it
    named = await _change(client, admin_headers, "/rollback", snapshot_id=tainted)

    for response in (plain, named):
        assert response.status_code == 409, response.text
        assert "tainted" in response.json()["detail"]
    assert await _active_snapshot(client, admin_headers) == clean


async def test_a_new_snapshot_does_not_inherit_a_tainted_adapter(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register,
    runtime: Runtime, fake_engine: FakeEngine,
) -> None:  # fmt: skip
    law, med = await register("law"), await register("med", seed=1)
    await _stage(client, admin_headers, {"law": law["id"]})
    assert (await _change(client, admin_headers, "/swap")).status_code == 200  # green: law
    await _taint(runtime, law["id"])

    created = await client.post(
        "/snapshots", json={"adapters": {"med": med["id"]}}, headers=admin_headers
    )

    assert created.status_code == 201, created.text
    assert created.json()["adapters"] == {"med": med["id"]}  # law falls back to the base model
    assert "tainted" in created.json()["reason"]
    assert law["name"] not in fake_engine.loaded_adapters.get("blue", set())
    named = await client.post(
        "/snapshots", json={"adapters": {"law": law["id"]}}, headers=admin_headers
    )
    assert named.status_code == 422, named.text
