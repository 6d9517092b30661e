"""Stage, swap and roll back through the admin API, against the fake engines."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from tests.unit.conftest import Register
from twinloop.db.models import Answer, AuditEntry
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine

LATEST = {"generation": "latest"}


async def _answer(client: httpx.AsyncClient, **extra: object) -> dict[str, object]:
    response = await client.post("/answer", json={"question": "Q?", "domain": "law", **extra})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_admin_routes_need_the_token(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/status"), ("POST", "/swap"), ("POST", "/rollback"),
                         ("GET", "/snapshots"), ("GET", "/adapters")]:  # fmt: skip
        missing = await client.request(method, path)
        wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        # A wrong token is no credential at all: 401 like a missing one (403 is for a valid
        # key whose role may not, tests/unit/identity).
        assert (missing.status_code, wrong.status_code) == (401, 401), path
        assert missing.json()["error"] == wrong.json()["error"] == "AuthenticationError"


async def test_stage_loads_the_adapter_into_shadow_only(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    register: Register,
    fake_engine: FakeEngine,
) -> None:
    adapter = await register("law")

    created = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}, "reason": "new law facts"},
        headers=admin_headers,
    )  # fmt: skip

    assert created.status_code == 201, created.text
    assert fake_engine.loaded_adapters["green"] == {adapter["name"]}
    assert not fake_engine.loaded_adapters.get("blue")
    status = (await client.get("/status", headers=admin_headers)).json()
    assert (status["active_slot"], status["generation"]) == ("blue", 2)
    green = next(s for s in status["slots"] if s["slot"] == "green")
    assert green["snapshot_id"] == created.json()["id"]
    assert green["adapters"] == {"law": adapter["name"]}
    assert green["missing_adapters"] == []
    # Active still answers with the base model; an operator can preview Shadow.
    active = await _answer(client)
    preview = await client.post(
        "/answer", json={"question": "Q?", "domain": "law", "target": "shadow"},
        headers=admin_headers,
    )  # fmt: skip
    assert (active["slot"], active["adapter"]) == ("blue", None)
    assert preview.status_code == 200, preview.text
    assert preview.json()["slot"] == "green"
    assert preview.json()["adapter"] == adapter["name"]
    assert preview.json()["preview"] is True
    assert preview.json()["answer"] != active["answer"]


async def test_previews_need_the_token_and_are_kept_apart(
    client: httpx.AsyncClient, admin_headers: dict[str, str], runtime: Runtime
) -> None:
    refused = await client.post("/answer", json={"question": "Q?", "target": "shadow"})
    assert refused.status_code == 403

    preview = await client.post(
        "/answer", json={"question": "Q?", "target": "shadow"}, headers=admin_headers
    )
    assert preview.status_code == 200, preview.text
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, preview.json()["answer_id"])
    assert row is not None and row.is_preview is True
    metrics = runtime.metrics.render().decode()
    assert 'route="answer_preview"' in metrics


async def test_swap_then_rollback_is_a_pointer_flip(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    register: Register,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    adapter = await register("law")
    base_snapshot = (await _answer(client))["snapshot_id"]
    staged = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers
    )
    assert staged.status_code == 201, staged.text
    loads_before = len(fake_engine.calls("/v1/load_lora_adapter"))

    swapped = await client.post(
        "/swap", json={"reason": "QA passed", "generation": 2}, headers=admin_headers
    )

    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["active_slot"] == "green"
    assert swapped.json()["active_snapshot_id"] == staged.json()["id"]
    after_swap = await _answer(client)
    assert (after_swap["slot"], after_swap["adapter"]) == ("green", adapter["name"])

    rolled = await client.post(
        "/rollback", json={"reason": "users unhappy", "generation": 3}, headers=admin_headers
    )

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active_slot"] == "blue"
    assert rolled.json()["active_snapshot_id"] == base_snapshot
    assert len(fake_engine.calls("/v1/load_lora_adapter")) == loads_before  # nothing reloaded
    after_rollback = await _answer(client)
    assert (after_rollback["slot"], after_rollback["adapter"]) == ("blue", None)
    async with runtime.sessionmaker() as session:
        audit = (
            await session.execute(select(AuditEntry).order_by(AuditEntry.created_at))
        ).scalars()
        actions = [(a.action, a.actor, a.reason) for a in audit]
    assert ("release.swap", "admin", "QA passed") in actions
    assert ("release.rollback", "admin", "users unhappy") in actions
    assert ("adapter.register", "admin", None) in actions


async def test_rollback_to_a_snapshot_no_slot_holds_stages_it_first(
    client: httpx.AsyncClient, admin_headers: dict[str, str], register: Register,
    fake_engine: FakeEngine,
) -> None:  # fmt: skip
    first, second = await register("law", seed=1), await register("law", seed=2)
    one = await client.post(
        "/snapshots", json={"adapters": {"law": first["id"]}}, headers=admin_headers
    )
    swapped_to_one = await client.post("/swap", json=LATEST, headers=admin_headers)  # green: one
    two = await client.post(
        "/snapshots", json={"adapters": {"law": second["id"]}}, headers=admin_headers
    )
    swapped_to_two = await client.post(
        "/swap", json=LATEST, headers=admin_headers
    )  # blue: two; green: one
    third = await client.post("/snapshots", json={"adapters": {"law": None}}, headers=admin_headers)
    assert (one.status_code, two.status_code, third.status_code) == (201, 201, 201)
    assert swapped_to_one.json()["active_slot"] == "green"
    assert swapped_to_two.json()["active_slot"] == "blue"
    # green now holds a third snapshot: `one` is held by no slot any more.
    assert first["name"] not in fake_engine.loaded_adapters["green"]

    rolled = await client.post(
        "/rollback", json={"snapshot_id": one.json()["id"], **LATEST}, headers=admin_headers
    )

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active_snapshot_id"] == one.json()["id"]
    assert rolled.json()["active_slot"] == "green"
    assert first["name"] in fake_engine.loaded_adapters["green"]
    assert (await _answer(client))["adapter"] == first["name"]


async def test_rollback_with_nothing_earlier_is_409(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/rollback", json=LATEST, headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["error"] == "ReleaseConflictError"
    assert "no earlier active snapshot" in response.json()["detail"]


async def test_a_tampered_adapter_never_reaches_an_engine(
    client: httpx.AsyncClient, admin_headers: dict[str, str], register: Register,
    fake_engine: FakeEngine,
) -> None:  # fmt: skip
    adapter = await register("law")
    stored = Path(str(await _stored_path(client, admin_headers, str(adapter["id"]))))
    weights = stored / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")

    response = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers
    )

    assert response.status_code == 409
    assert response.json()["error"] == "AdapterIntegrityError"
    assert "will not be loaded" in response.json()["detail"]
    assert fake_engine.calls("/v1/load_lora_adapter") == []
    status = (await client.get("/status", headers=admin_headers)).json()
    assert status["generation"] == 1


async def _stored_path(client: httpx.AsyncClient, headers: dict[str, str], adapter_id: str) -> str:
    runtime: Runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.sessionmaker() as session:
        adapter = await runtime.registry.get(session, adapter_id)
    return adapter.path


async def test_an_engine_that_lost_its_adapters_gets_them_back(
    client: httpx.AsyncClient, admin_headers: dict[str, str], register: Register,
    fake_engine: FakeEngine, runtime: Runtime,
) -> None:  # fmt: skip
    adapter = await register("law")
    staged = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers
    )
    swapped = await client.post("/swap", json=LATEST, headers=admin_headers)
    assert (staged.status_code, swapped.status_code) == (201, 200)
    fake_engine.loaded_adapters["green"].clear()  # the engine restarted

    answer = await _answer(client)

    assert answer["adapter"] == adapter["name"]
    assert fake_engine.loaded_adapters["green"] == {adapter["name"]}
    metrics = runtime.metrics.render().decode()
    assert 'twinloop_engine_reconcile_loads_total{slot="green"} 1.0' in metrics


async def test_unknown_adapter_or_domain_in_a_snapshot_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], register: Register
) -> None:
    adapter = await register("law")

    wrong_domain = await client.post(
        "/snapshots", json={"adapters": {"med": adapter["id"]}}, headers=admin_headers
    )
    missing = await client.post(
        "/snapshots", json={"adapters": {"law": "0" * 32}}, headers=admin_headers
    )
    unknown = await client.post(
        "/snapshots", json={"adapters": {"astrology": None}}, headers=admin_headers
    )

    assert wrong_domain.status_code == 422
    assert "registered for 'law'" in wrong_domain.json()["detail"]
    assert missing.status_code == 404
    assert unknown.status_code == 422


async def test_a_snapshot_that_does_not_exist_is_404_wherever_it_is_named(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    staged = await client.post("/snapshots/nope/stage", headers=admin_headers)
    rolled = await client.post(
        "/rollback", json={"snapshot_id": "nope", **LATEST}, headers=admin_headers
    )

    for response in (staged, rolled):
        assert response.status_code == 404, response.text
        assert response.json() == {
            "error": "NotFoundError",
            "detail": "snapshot nope does not exist",
        }


async def test_a_swap_trusts_a_fresh_engine_listing_instead_of_asking_again(
    client: httpx.AsyncClient, admin_headers: dict[str, str], register: Register,
    fake_engine: FakeEngine, runtime: Runtime,
) -> None:  # fmt: skip
    adapter = await register("law")
    staged = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers
    )
    assert staged.status_code == 201, staged.text
    listings = len(fake_engine.calls("/v1/models"))

    swapped = await client.post("/swap", json=LATEST, headers=admin_headers)  # listed in staging
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["active_slot"] == "green"
    assert len(fake_engine.calls("/v1/models")) == listings

    runtime.releases._verified_for_s = 0  # an old listing: the engine is asked again
    rolled = await client.post("/rollback", json=LATEST, headers=admin_headers)
    swapped = await client.post("/swap", json=LATEST, headers=admin_headers)
    assert (rolled.status_code, swapped.status_code) == (200, 200)
    assert len(fake_engine.calls("/v1/models")) > listings
