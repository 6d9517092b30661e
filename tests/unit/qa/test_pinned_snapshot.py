"""A QA run answers against the snapshot Shadow served when it started, whatever is staged
while it runs: an ingest does not fail it; taking its adapters off does, by name."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.shadow_changes import ingest, until
from tests.unit.qa.conftest import Oracle, StageAdapter
from twinloop.db.models import Snapshot
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine

CHAT = "/v1/chat/completions"
DOCUMENT = "The highest court in the United States is the Supreme Court."


async def _during_qa(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    fake_engine: FakeEngine,
    change: Any,
) -> httpx.Response:
    """POST /qa, and run `change()` while the run's first questions wait at the engine."""
    asked = len(fake_engine.calls(CHAT))
    asking = fake_engine.hold(CHAT)
    running = asyncio.create_task(client.post("/qa", headers=admin_headers))
    await until(lambda: len(fake_engine.calls(CHAT)) > asked or running.done())
    await change()
    asking.set()
    return await running


def _shadow_id(runtime: Runtime) -> str:
    state = runtime.releases.state
    return state.serving(state.shadow_slot).snapshot_id


async def test_an_ingest_staged_during_the_run_does_not_fail_it(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    oracle: Oracle,
    stage_adapter: StageAdapter,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    oracle.knows = lambda *_: True
    await stage_adapter("law")
    pinned = _shadow_id(runtime)

    async def add_document() -> None:
        await ingest(
            client, admin_headers, {"type": "document", "id": "d1", "domain": "law",
                                    "text": DOCUMENT},
        )  # fmt: skip

    response = await _during_qa(client, admin_headers, fake_engine, add_document)

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["snapshot_id"], report["passed"]) == (pinned, True)
    child = _shadow_id(runtime)
    async with runtime.sessionmaker() as session:
        staged = await session.get(Snapshot, child)
    assert staged is not None and staged.parent_id == pinned  # the ingest's child
    # Every case was answered at the pinned RAG version: the document never reached one.
    assert all(DOCUMENT not in passages for _, _, passages in oracle.asked)
    verdict = await runtime.qa.snapshot_verdict(child)
    assert verdict is not None and verdict.id == report["id"]


async def test_a_stage_that_takes_the_pinned_adapters_off_fails_the_run_by_name(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    oracle: Oracle,
    stage_adapter: StageAdapter,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    await stage_adapter("law")
    pinned = _shadow_id(runtime)

    async def stage_without_it() -> None:
        staged = await client.post(
            "/snapshots", json={"adapters": {"law": None}}, headers=admin_headers
        )
        assert staged.status_code == 201, staged.text

    response = await _during_qa(client, admin_headers, fake_engine, stage_without_it)

    assert response.status_code == 409, response.text
    assert response.json()["error"] == "QaError"
    detail = response.json()["detail"]
    assert f"moved during the QA run from snapshot {pinned}" in detail
    assert "no adapters" in detail and "Run QA again" in detail
    registry = runtime.metrics.registry
    assert registry.get_sample_value("twinloop_qa_runs_total", {"outcome": "failed"}) == 1.0
