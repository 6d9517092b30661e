"""The cycle behind a canary when an ingest stages a child of its snapshot.

A document ingested after a cycle passed QA, or while its canary runs, stages a child of the
cycle's snapshot on Shadow: the same adapters, newer RAG versions. That child stands for the
cycle's snapshot: the automatic canary starts for the cycle on it, a running canary follows
it, and the promotion, rollback or settling of the canary moves that cycle. A child serving
other adapters does not. The gateway's own canary loop may load (and follow) before a test
does: each test asserts only what holds whichever ran first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.shadow_changes import ingest
from tests.unit.api.canary_steps import (
    awaiting_cycle,
    items_counted,
    learned,
    read_cycle,
    read_examples,
    stage_adapter,
    start_canary,
)
from tests.unit.conftest import Register
from twinloop.canary import service as canary_service
from twinloop.canary.decision import Decision, Verdict
from twinloop.canary.service import CanaryService
from twinloop.db.models import AuditEntry
from twinloop.releases import snapshots
from twinloop.releases.state import ReleaseState
from twinloop.runtime import Runtime


def _shadow(runtime: Runtime) -> str:
    state = runtime.releases.state
    return state.serving(state.shadow_slot).snapshot_id


def _active(runtime: Runtime) -> str:
    state = runtime.releases.state
    return state.serving(state.active_slot).snapshot_id


async def _ingest_document(
    client: httpx.AsyncClient, headers: dict[str, str], runtime: Runtime, doc_id: str = "d1"
) -> str:
    """A law document ingested and staged: Shadow's new snapshot, a child of the last one."""
    before = _shadow(runtime)
    await ingest(
        client, headers, {"type": "document", "id": doc_id, "domain": "law", "text": "Courts."}
    )
    child = _shadow(runtime)
    assert child != before
    return child


async def _stage_child_with(runtime: Runtime, domain: str, adapter_id: str) -> str:
    """A child of Shadow's snapshot with another adapter, staged as the trainer stages one."""

    async def derive(session: AsyncSession, state: ReleaseState) -> str:
        parent = await snapshots.get_snapshot(session, state.serving(state.shadow_slot).snapshot_id)
        made = await snapshots.create_snapshot(
            session,
            parent=parent,
            adapters={domain: adapter_id},
            domains=runtime.settings.domains,
            actor="test",
            reason="another cycle's adapter",
        )
        return made.id

    state = await runtime.releases.change_shadow(derive, actor="test", reason="other adapters")
    return state.serving(state.shadow_slot).snapshot_id


async def _cycle(
    client: httpx.AsyncClient, headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> tuple[str, str, dict[str, str]]:
    """A cycle that staged a law adapter and passed QA: its snapshot, its id, its items."""
    snapshot_id = (await stage_adapter(client, headers, tmp_path))[1]
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    return snapshot_id, cycle_id, await learned(runtime, cycle_id, fresh=("correction", 0))


async def _swap(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    body = {"reason": "by hand", "generation": "latest"}
    swapped = await client.post("/swap", json=body, headers=headers)
    assert swapped.status_code == 200, swapped.text


def _auto(runtime: Runtime) -> CanaryService:
    """A gateway's canary service with `canary.auto` on."""
    return CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary.model_copy(update={"auto": True, "percent": 5.0}),
        max_rejections=runtime.settings.trainer.max_rejections,
    )


def _decide(monkeypatch: pytest.MonkeyPatch, verdict: Verdict, reason: str) -> None:
    monkeypatch.setattr(canary_service, "decide", lambda *a, **k: Decision(verdict, reason, {}))


async def _canary(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    canary: dict[str, Any] = (await client.get("/canary", headers=headers)).json()["canary"]
    return canary


async def _audits(runtime: Runtime, action: str) -> list[AuditEntry]:
    async with runtime.sessionmaker() as session:
        found = await session.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(found.scalars())


async def test_with_auto_an_awaiting_cycle_gets_its_canary_after_an_ingest_staged_a_child(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    _, cycle_id, _ = await _cycle(client, admin_headers, tmp_path, runtime)
    child = await _ingest_document(client, admin_headers, runtime)
    auto = _auto(runtime)

    await auto.evaluate()

    assert auto.state is not None and auto.state.snapshot_id == child
    assert (await read_cycle(runtime, cycle_id)).state == "canary"
    status = await _canary(client, admin_headers)
    assert (status["snapshot_id"], status["cycle_id"]) == (child, cycle_id)
    assert status["started_by"] == "canary"


async def test_a_running_canary_follows_an_ingests_child_and_promotes_the_cycle(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot_id, cycle_id, ids = await _cycle(client, admin_headers, tmp_path, runtime)
    started = await start_canary(client, admin_headers, percent=100)

    child = await _ingest_document(client, admin_headers, runtime)
    state = await runtime.canary.load()

    # The split goes on, on the child: its canary users are served the newer documents.
    assert state is not None and (state.id, state.snapshot_id) == (started["id"], child)
    served = await client.post("/answer", json={"question": "Q?", "domain": "law", "user_id": "u"})
    assert (served.json()["role"], served.json()["snapshot_id"]) == ("canary", child)
    [follow] = await _audits(runtime, "canary.follow")
    assert (follow.target, follow.details["from_snapshot_id"]) == (child, snapshot_id)
    assert follow.details["cycle_id"] == cycle_id
    assert "twinloop_canary_follows_total 1.0" in runtime.metrics.render().decode()

    _decide(monkeypatch, Verdict.PROMOTE, "promote: ok")
    decision = await runtime.canary.evaluate()

    assert decision is not None and decision.verdict is Verdict.PROMOTE
    assert _active(runtime) == child
    status = await _canary(client, admin_headers)
    assert (status["status"], status["snapshot_id"]) == ("promoted", child)
    assert (await read_cycle(runtime, cycle_id)).state == "promoted"
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("accepted", 0)


async def test_an_abort_decided_after_following_rolls_the_cycle_back_with_its_reason(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, cycle_id, ids = await _cycle(client, admin_headers, tmp_path, runtime)
    started = await start_canary(client, admin_headers, percent=50)
    await _ingest_document(client, admin_headers, runtime)
    _decide(monkeypatch, Verdict.ABORT, "abort: worse")

    decision = await runtime.canary.evaluate()

    # Decided on its counts, not ended for Shadow's move.
    assert decision is not None and decision.verdict is Verdict.ABORT
    assert (await _canary(client, admin_headers))["reason"] == "abort: worse"
    cycle = await read_cycle(runtime, cycle_id)
    assert (cycle.state, cycle.error) == ("rolled_back", f"canary {started['id']}: abort: worse")
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections, fresh.reject_reason) == (
        "pending", 1, f"cycle {cycle_id} rolled back by canary {started['id']}: abort: worse",
    )  # fmt: skip
    assert items_counted(runtime) == {"handed_back": 1.0}


async def test_a_swap_of_the_child_outside_the_canary_promotes_the_cycle(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    """Swapped in before or after the canary followed the child: its adapters went live."""
    _, cycle_id, ids = await _cycle(client, admin_headers, tmp_path, runtime)
    await start_canary(client, admin_headers, percent=10)
    child = await _ingest_document(client, admin_headers, runtime)
    await _swap(client, admin_headers)

    assert await runtime.canary.evaluate() is None

    status = await _canary(client, admin_headers)
    assert status["status"] == "promoted"
    assert "outside the canary" in status["reason"]
    assert _active(runtime) == child
    assert (await read_cycle(runtime, cycle_id)).state == "promoted"
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("accepted", 0)


async def _inconclusive(
    client: httpx.AsyncClient, headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> tuple[str, str, dict[str, str]]:
    """A cycle whose canary ended inconclusive: its snapshot, its id, its items."""
    snapshot_id, cycle_id, ids = await _cycle(client, headers, tmp_path, runtime)
    await start_canary(client, headers, percent=100, max_duration_s=0.001)
    await runtime.canary.evaluate()  # the deadline has passed; the loop may have been first
    assert (await read_cycle(runtime, cycle_id)).state == "inconclusive"
    return snapshot_id, cycle_id, ids


async def test_an_inconclusive_cycle_waits_through_an_ingest_and_a_swap_of_the_child_promotes_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    snapshot_id, cycle_id, ids = await _inconclusive(client, admin_headers, tmp_path, runtime)
    child = await _ingest_document(client, admin_headers, runtime)

    await runtime.canary.evaluate()

    # Shadow still serves the cycle's adapters: nothing is settled, nothing handed back.
    assert (await read_cycle(runtime, cycle_id)).state == "inconclusive"
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("accepted", 0)
    assert await _audits(runtime, "canary.settle") == []

    await _swap(client, admin_headers)
    await runtime.canary.evaluate()

    cycle = await read_cycle(runtime, cycle_id)
    assert cycle.state == "promoted"
    assert cycle.error is not None and f"snapshot {child} was made active by a swap" in cycle.error
    assert f"a child of {snapshot_id}" in cycle.error
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("accepted", 0)
    assert items_counted(runtime) == {}


async def test_a_new_canary_of_an_ingests_child_continues_the_inconclusive_cycle(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    _, cycle_id, ids = await _inconclusive(client, admin_headers, tmp_path, runtime)
    child = await _ingest_document(client, admin_headers, runtime)

    again = await start_canary(client, admin_headers, percent=10)

    assert (again["snapshot_id"], again["cycle_id"]) == (child, cycle_id)
    assert (await read_cycle(runtime, cycle_id)).state == "canary"
    await client.post("/canary/abort", json={"reason": "no"}, headers=admin_headers)
    assert (await read_cycle(runtime, cycle_id)).state == "rolled_back"
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("pending", 1)


async def test_a_child_serving_other_adapters_does_not_stand_for_the_cycle(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    register: Register,
) -> None:
    _, cycle_id, _ = await _cycle(client, admin_headers, tmp_path, runtime)
    general = await register("general", seed=7)
    child = await _stage_child_with(runtime, "general", str(general["id"]))
    auto = _auto(runtime)

    await auto.evaluate()

    assert auto.state is None
    assert (await read_cycle(runtime, cycle_id)).state == "awaiting_canary"
    # An admin's canary of the child is no canary of the cycle.
    started = await start_canary(client, admin_headers, percent=10)
    assert (started["snapshot_id"], started["cycle_id"]) == (child, None)


async def test_a_running_canary_ends_when_shadow_moves_to_other_adapters(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    register: Register,
) -> None:
    _, cycle_id, _ = await _cycle(client, admin_headers, tmp_path, runtime)
    await start_canary(client, admin_headers, percent=10)
    await _ingest_document(client, admin_headers, runtime)  # followed: the same adapters
    general = await register("general", seed=7)
    child = await _stage_child_with(runtime, "general", str(general["id"]))

    assert await runtime.canary.evaluate() is None

    status = await _canary(client, admin_headers)
    assert status["status"] == "aborted"
    assert f"(now {child})" in status["reason"]
    assert (await read_cycle(runtime, cycle_id)).state == "rolled_back"
