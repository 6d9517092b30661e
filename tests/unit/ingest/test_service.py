"""/ingest for documents, and what each slot sees of them, against a fake index."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN_HEADERS
from twinloop.settings import Settings
from twinloop.testing.knowledge import FakeKnowledge

FACT = "The Zorblax treaty of 2031 caps moon rent at 12 credits."


def _doc(doc_id: str = "d1", text: str = FACT, domain: str = "law") -> dict[str, object]:
    return {"type": "document", "id": doc_id, "domain": domain, "text": text, "source": "t"}


def _delete(doc_id: str) -> dict[str, object]:
    return {"type": "document", "id": doc_id, "deleted": True}


async def _contexts(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                    target: str = "active") -> list[str]:  # fmt: skip
    body = {"question": "moon rent?", "domain": "law", "target": target}
    response = await client.post("/answer", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return [c["doc_id"] for c in response.json()["contexts"]]


async def test_a_new_document_is_seen_by_shadow_then_active_after_swap_and_not_after_rollback(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/ingest", json={"items": [_doc()]}, headers=ADMIN_HEADERS)

    assert response.status_code == 202, response.text
    item = response.json()["items"][0]
    assert (item["status"], item["domain"], item["rag_version"]) == ("added", "law", 1)
    assert response.json()["shadow_snapshot_id"]
    assert await _contexts(client) == []
    assert await _contexts(client, admin_headers, target="shadow") == ["d1"]
    status = (await client.get("/status", headers=admin_headers)).json()
    by_role = {s["role"]: s for s in status["slots"]}
    assert by_role["shadow"]["rag_versions"] == {"law": 1}
    assert by_role["active"]["rag_versions"] == {}
    metrics = (await client.get("/metrics")).text
    assert 'twinloop_ingested_items_total{status="added",type="document"} 1.0' in metrics
    assert "twinloop_retrieval_latency_seconds_count" in metrics

    assert (
        await client.post("/swap", json={"generation": "latest"}, headers=admin_headers)
    ).status_code == 200
    assert await _contexts(client) == ["d1"]

    assert (
        await client.post("/rollback", json={"generation": "latest"}, headers=admin_headers)
    ).status_code == 200
    assert await _contexts(client) == []


async def test_same_content_is_a_no_op_new_content_supersedes_delete_removes(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_knowledge: FakeKnowledge
) -> None:
    first = await client.post("/ingest", json={"items": [_doc()]}, headers=ADMIN_HEADERS)
    again = await client.post("/ingest", json={"items": [_doc()]}, headers=ADMIN_HEADERS)
    changed = await client.post(
        "/ingest", json={"items": [_doc(text="Moon rent is free.")]}, headers=ADMIN_HEADERS
    )
    deleted = await client.post("/ingest", json={"items": [_delete("d1")]}, headers=ADMIN_HEADERS)
    missing = await client.post("/ingest", json={"items": [_delete("zz")]}, headers=ADMIN_HEADERS)

    assert {r.status_code for r in (first, again, changed, deleted, missing)} == {202}
    assert again.json()["items"][0]["status"] == "unchanged"
    assert again.json()["shadow_snapshot_id"] is None
    assert (changed.json()["items"][0]["status"], changed.json()["items"][0]["rag_version"]) == (
        "updated", 2,
    )  # fmt: skip
    assert (deleted.json()["items"][0]["status"], deleted.json()["items"][0]["rag_version"]) == (
        "deleted", 3,
    )  # fmt: skip
    assert missing.json()["items"][0]["status"] == "not_found"
    versions = [(row[2], row[3], row[4]) for row in fake_knowledge.rows]
    assert versions == [(FACT, 1, 2), ("Moon rent is free.", 2, 3)]
    assert await _contexts(client, admin_headers, target="shadow") == []


async def test_bad_items_are_rejected_one_by_one_and_the_rest_is_stored(
    client: httpx.AsyncClient,
) -> None:
    items = [_doc(domain="astrology"), _doc("d2"), {"type": "document", "id": "d3"}]
    response = await client.post("/ingest", json={"items": items}, headers=ADMIN_HEADERS)

    assert response.status_code == 202, response.text
    statuses = [(i["id"], i["status"]) for i in response.json()["items"]]
    assert statuses == [("d1", "rejected"), ("d2", "added"), ("d3", "rejected")]
    assert "astrology" in response.json()["items"][0]["detail"]


async def test_idempotency_key_replays_and_refuses_another_body(
    client: httpx.AsyncClient, fake_knowledge: FakeKnowledge
) -> None:
    headers = {**ADMIN_HEADERS, "Idempotency-Key": "batch-1"}
    first = await client.post("/ingest", json={"items": [_doc()]}, headers=headers)
    replay = await client.post("/ingest", json={"items": [_doc()]}, headers=headers)
    other = await client.post("/ingest", json={"items": [_doc("d9")]}, headers=headers)

    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.json() == first.json()
    assert len(fake_knowledge.rows) == 1
    assert other.status_code == 422
    assert "another request body" in other.json()["detail"]


async def test_limits_name_themselves(client: httpx.AsyncClient, settings: Settings) -> None:
    too_many = await client.post(
        "/ingest", json={"items": [_doc(f"d{i}") for i in range(101)]}, headers=ADMIN_HEADERS
    )
    too_long = await client.post(
        "/ingest",
        json={"items": [_doc(text="x" * (settings.rag.max_document_chars + 1))]},
        headers=ADMIN_HEADERS,
    )

    assert too_many.status_code == 422
    assert "100" in too_many.json()["detail"]
    assert too_long.status_code == 413
    assert str(settings.rag.max_document_chars) in too_long.json()["detail"]


async def test_answers_can_skip_retrieval(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    assert (
        await client.post("/ingest", json={"items": [_doc()]}, headers=ADMIN_HEADERS)
    ).status_code == 202
    assert (
        await client.post("/swap", json={"generation": "latest"}, headers=admin_headers)
    ).status_code == 200
    assert await _contexts(client) == ["d1"]  # with retrieval, active finds the document

    response = await client.post(
        "/answer", json={"question": "moon rent?", "domain": "law", "use_rag": False}
    )

    assert response.status_code == 200, response.text
    assert response.json()["contexts"] == []
