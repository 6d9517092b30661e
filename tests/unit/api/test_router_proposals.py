from __future__ import annotations

import json

import httpx

from twinloop.routing.rules import default_rules


def _rules() -> dict[str, object]:
    body: dict[str, object] = json.loads(default_rules().to_json())
    return body


async def test_accepted_rules_become_a_new_version_staged_to_shadow_only(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/pr", json={"rules": _rules(), "reason": "same rules"}, headers=admin_headers
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["rules_version"], body["baseline_rules_version"]) == (2, 1)
    assert body["accuracy"] >= body["baseline_accuracy"]
    status = (await client.get("/status", headers=admin_headers)).json()
    shadow = next(s for s in status["slots"] if s["role"] == "shadow")
    active = next(s for s in status["slots"] if s["role"] == "active")
    assert shadow["snapshot_id"] == body["snapshot_id"]
    assert active["snapshot_id"] != body["snapshot_id"]
    snapshots = (await client.get("/snapshots", headers=admin_headers)).json()
    staged = next(s for s in snapshots if s["id"] == body["snapshot_id"])
    assert staged["router_rules_version"] == 2


async def test_invalid_rules_are_422_and_need_the_admin_token(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    rules = _rules()
    rules["fallback"] = "astrology"

    invalid = await client.post("/pr", json={"rules": rules}, headers=admin_headers)
    anonymous = await client.post("/pr", json={"rules": _rules()})

    assert invalid.status_code == 422
    assert "fallback" in invalid.json()["detail"]
    assert anonymous.status_code == 401
