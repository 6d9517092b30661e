"""/ingest is atomic from the reader's side: a failed batch leaves nothing visible, its RAG
version is never reused, staging is retried, and an ingest never holds the database while
it embeds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import ADMIN_HEADERS
from tests.unit.releases.conftest import another_gateway
from twinloop.db.models import Answer, Document, Feedback
from twinloop.releases.errors import StagingError
from twinloop.releases.service import DeriveSnapshot
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge

OLD = "The Zorblax treaty of 2031 caps moon rent at 12 credits."
NEW = "The Zorblax treaty of 2031 caps moon rent at 19 credits."
OTHER = "Lunar leases are registered at the Tycho land office."


def _doc(doc_id: str, text: str, domain: str = "law") -> dict[str, object]:
    return {"type": "document", "id": doc_id, "domain": domain, "text": text, "source": "t"}


async def _ingest(
    client: httpx.AsyncClient, *items: dict[str, object], headers: dict[str, str] | None = None
) -> httpx.Response:
    # As an admin: these tests are about atomicity, not who may send what.
    sent = {**ADMIN_HEADERS, **(headers or {})}
    return await client.post("/ingest", json={"items": list(items)}, headers=sent)


async def _shadow_texts(
    client: httpx.AsyncClient, admin_headers: dict[str, str], domain: str = "law"
) -> set[tuple[str, str]]:
    body = {"question": "moon rent?", "domain": domain, "target": "shadow"}
    response = await client.post("/answer", json=body, headers=admin_headers)
    assert response.status_code == 200, response.text
    return {(c["doc_id"], c["text"]) for c in response.json()["contexts"]}


async def _shadow_rag_versions(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> dict[str, int]:
    status = (await client.get("/status", headers=admin_headers)).json()
    shadow = next(s for s in status["slots"] if s["role"] == "shadow")
    versions: dict[str, int] = shadow["rag_versions"]
    return versions


async def test_a_failure_mid_batch_leaves_nothing_visible_and_the_next_batch_gets_a_new_version(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_knowledge: FakeKnowledge
) -> None:
    assert (await _ingest(client, _doc("d0", OLD))).status_code == 202  # version 1
    fake_knowledge.fail_writes = {"d2"}

    # d0 is superseded and d1 written before the second document's write fails.
    failed = await _ingest(client, _doc("d0", NEW), _doc("d2", OTHER), _doc("d1", OTHER))

    assert failed.status_code == 503, failed.text
    for version in range(1, 6):  # whatever a later snapshot pins, the batch is not there
        assert fake_knowledge.visible("law", version) == [("d0", OLD)]
    assert await _shadow_texts(client, admin_headers) == {("d0", OLD)}

    fake_knowledge.fail_writes = set()
    later = await _ingest(client, _doc("d9", OTHER))

    assert later.status_code == 202, later.text
    assert later.json()["items"][0]["rag_version"] == 3  # version 2 died with the batch
    assert await _shadow_texts(client, admin_headers) == {("d0", OLD), ("d9", OTHER)}

    resent = await _ingest(client, _doc("d0", NEW), _doc("d2", OTHER))

    assert [(i["status"], i["rag_version"]) for i in resent.json()["items"]] == [
        ("updated", 4),
        ("added", 4),
    ]
    assert await _shadow_texts(client, admin_headers) == {
        ("d0", NEW),
        ("d2", OTHER),
        ("d9", OTHER),
    }


async def test_a_failed_undo_keeps_the_version_out_of_sight_until_the_next_ingest_cleans_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], fake_knowledge: FakeKnowledge
) -> None:
    assert (await _ingest(client, _doc("d0", OLD))).status_code == 202
    fake_knowledge.fail_writes = {"d2"}
    fake_knowledge.fail_undo = True

    failed = await _ingest(client, _doc("d0", NEW), _doc("d2", OTHER))

    assert failed.status_code == 503
    # Chroma still holds the batch's writes, at version 2, which nothing pins ...
    assert ("d0", NEW) in fake_knowledge.visible("law", 2)
    assert await _shadow_rag_versions(client, admin_headers) == {"law": 1}

    # ... and no later version can be taken while they are there.
    still_failing = await _ingest(client, _doc("d9", OTHER))
    assert still_failing.status_code == 503, still_failing.text
    assert "version 2" in still_failing.json()["detail"]

    fake_knowledge.fail_writes, fake_knowledge.fail_undo = set(), False
    later = await _ingest(client, _doc("d9", OTHER))

    assert later.status_code == 202, later.text
    version = later.json()["items"][0]["rag_version"]
    assert version > 2
    assert sorted(fake_knowledge.visible("law", version)) == [("d0", OLD), ("d9", OTHER)]


async def test_repeated_ids_in_a_batch_are_refused_by_name_and_nothing_is_stored(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    fake_knowledge: FakeKnowledge,
    runtime: Runtime,
) -> None:
    response = await _ingest(
        client,
        _doc("d1", OLD),
        _doc("d2", OTHER),
        _doc("d1", NEW),
        {"type": "feedback", "id": "f1", "answer_id": "a", "rating": "up"},
        {"type": "feedback", "id": "f1", "answer_id": "a", "rating": "down"},
    )

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "'d1'" in detail and "'f1'" in detail and "'d2'" not in detail
    assert fake_knowledge.rows == []
    async with runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 0
        assert await session.scalar(select(func.count()).select_from(Feedback)) == 0
    assert await _shadow_rag_versions(client, admin_headers) == {}


async def test_a_document_that_collides_with_a_corrections_fact_is_refused(
    client: httpx.AsyncClient, fake_knowledge: FakeKnowledge, runtime: Runtime
) -> None:
    served = await client.post("/answer", json={"question": "moon rent?", "domain": "law"})
    answer_id = served.json()["answer_id"]
    feedback = {"type": "feedback", "id": "f1", "answer_id": answer_id, "rating": "down",
                "correction": "Moon rent is 19 credits."}  # fmt: skip

    response = await _ingest(client, feedback, _doc("fact:f1", OTHER))

    assert response.status_code == 422, response.text
    assert "'fact:f1'" in response.json()["detail"]
    assert fake_knowledge.rows == []
    async with runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Feedback)) == 0


def _failing_stage(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> list[str]:
    """Make the next `times` Shadow changes fail like an engine that would not load; returns
    who asked for each."""
    real = runtime.releases.change_shadow
    asked: list[str] = []

    async def change_shadow(derive: DeriveSnapshot, *, actor: str, reason: str) -> Any:
        asked.append(actor)
        if len(asked) <= times:
            raise StagingError("the shadow engine does not list its adapters (injected)")
        return await real(derive, actor=actor, reason=reason)

    monkeypatch.setattr(runtime.releases, "change_shadow", change_shadow)
    return asked


async def test_a_staging_failure_is_a_202_with_staging_pending_and_a_replay_stages_it(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _failing_stage(runtime, monkeypatch)
    key = {"Idempotency-Key": "batch-7"}

    first = await _ingest(client, _doc("d1", OLD), headers=key)

    assert first.status_code == 202, first.text
    body = first.json()
    assert body["items"][0]["status"] == "added"
    assert body["staging"] == "pending"
    assert "injected" in body["staging_error"]
    assert body["shadow_snapshot_id"] is None
    assert await _shadow_rag_versions(client, admin_headers) == {}

    replay = await _ingest(client, _doc("d1", OLD), headers=key)

    assert replay.status_code == 202, replay.text
    assert replay.json()["items"] == body["items"]
    assert replay.json()["staging"] == "staged"
    assert replay.json()["shadow_snapshot_id"]
    assert await _shadow_rag_versions(client, admin_headers) == {"law": 1}
    assert await _shadow_texts(client, admin_headers) == {("d1", OLD)}

    again = await _ingest(client, _doc("d1", OLD), headers=key)
    assert again.json() == replay.json()


async def test_after_a_staging_failure_the_same_batch_resent_is_unchanged_and_staged(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _failing_stage(runtime, monkeypatch)
    first = await _ingest(client, _doc("d1", OLD), _doc("m1", OTHER, domain="med"))
    assert (first.status_code, first.json()["staging"]) == (202, "pending")

    resent = await _ingest(client, _doc("d1", OLD), _doc("m1", OTHER, domain="med"))

    assert resent.status_code == 202, resent.text
    assert [i["status"] for i in resent.json()["items"]] == ["unchanged", "unchanged"]
    assert resent.json()["staging"] == "staged"
    assert await _shadow_rag_versions(client, admin_headers) == {"law": 1, "med": 1}
    assert await _shadow_texts(client, admin_headers) == {("d1", OLD)}


async def test_an_answer_is_served_and_stored_while_an_ingest_embeds(
    client: httpx.AsyncClient, fake_knowledge: FakeKnowledge, runtime: Runtime
) -> None:
    release = asyncio.Event()
    fake_knowledge.hold_embedding = release
    ingest = asyncio.create_task(_ingest(client, _doc("d1", "x " * 5000)))
    try:
        await asyncio.wait_for(fake_knowledge.embedding_started.wait(), 10)

        answered = await asyncio.wait_for(
            client.post("/answer", json={"question": "moon rent?", "domain": "law"}), 5
        )
        assert answered.status_code == 200, answered.text
        async with runtime.sessionmaker() as session:
            assert await session.get(Answer, answered.json()["answer_id"]) is not None
        await asyncio.wait_for(runtime.releases.refresh(), 5)  # what the release watcher does
        assert not ingest.done()
    finally:
        release.set()
    response = await asyncio.wait_for(ingest, 10)
    assert response.status_code == 202, response.text


async def test_a_gateway_that_starts_stages_what_a_stopped_one_left_pending(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    runtime: Runtime,
    settings: Settings,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between commit and staging, in effect: the next gateway to start shows Shadow the
    batch without waiting for its replay, another ingest or a training cycle."""
    _failing_stage(runtime, monkeypatch)
    first = await _ingest(client, _doc("d1", OLD))
    assert (first.status_code, first.json()["staging"]) == (202, "pending")

    async with another_gateway(settings, fake_engine) as restarted:
        # (Its document index is a fake of its own: the version Shadow pins is what counts.)
        assert await _shadow_rag_versions(restarted, admin_headers) == {"law": 1}
