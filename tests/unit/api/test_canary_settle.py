"""A cycle whose canary ended inconclusive is settled by what the admin does next.

An admin's swap that makes its snapshot active promotes the cycle; a rollback or a restaged
Shadow that leaves the snapshot served nowhere rolls it back and hands its items back; a new
canary of the snapshot, still staged, continues it. The gateway's own canary loop may
evaluate before a test does: each test calls `evaluate` itself and asserts only what holds
whichever ran first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from tests.unit.api.canary_steps import (
    awaiting_cycle,
    items_counted,
    learned,
    read_cycle,
    read_examples,
    stage_adapter,
    start_canary,
)
from twinloop.canary.service import CanaryService
from twinloop.db.models import AuditEntry
from twinloop.runtime import Runtime


@dataclass(frozen=True)
class Ended:
    """A canary that ended inconclusive, and the cycle (with its items) behind it."""

    canary_id: str
    snapshot_id: str
    cycle_id: str
    items: dict[str, str]


async def _inconclusive(
    client: httpx.AsyncClient, headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> Ended:
    snapshot_id = (await stage_adapter(client, headers, tmp_path))[1]
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    ids = await learned(runtime, cycle_id, fresh=("correction", 0), qa_made=("qa-correction", 0))
    started = await start_canary(client, headers, percent=100, max_duration_s=0.001)

    await runtime.canary.evaluate()  # the deadline has passed; the loop may have been first

    ended = (await client.get("/canary", headers=headers)).json()["canary"]
    assert (ended["id"], ended["status"]) == (started["id"], "inconclusive")
    assert (await read_cycle(runtime, cycle_id)).state == "inconclusive"
    return Ended(started["id"], snapshot_id, cycle_id, ids)


async def _change(
    client: httpx.AsyncClient, headers: dict[str, str], runtime: Runtime, path: str
) -> None:
    """An admin's `/swap` or `/rollback` at the generation in force."""
    body = {"reason": "by hand", "generation": runtime.releases.state.generation}
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text


async def _settlements(runtime: Runtime) -> list[AuditEntry]:
    async with runtime.sessionmaker() as session:
        found = await session.execute(
            select(AuditEntry).where(AuditEntry.action == "canary.settle")
        )
        return list(found.scalars())


async def test_still_staged_an_inconclusive_cycle_waits(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)

    assert await runtime.canary.evaluate() is None

    assert (await read_cycle(runtime, ended.cycle_id)).state == "inconclusive"
    examples = await read_examples(runtime, ended.items)
    assert {(e.status, e.rejections) for e in examples.values()} == {("accepted", 0)}
    assert await _settlements(runtime) == []


async def test_an_admins_swap_after_an_inconclusive_canary_promotes_its_cycle(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)

    await _change(client, admin_headers, runtime, "/swap")
    await runtime.canary.evaluate()

    cycle = await read_cycle(runtime, ended.cycle_id)
    assert cycle.state == "promoted"
    assert cycle.error is not None
    assert "swap" in cycle.error and f"canary {ended.canary_id} ended inconclusive" in cycle.error
    examples = await read_examples(runtime, ended.items)
    assert {(e.status, e.rejections) for e in examples.values()} == {("accepted", 0)}
    assert items_counted(runtime) == {}
    [audit] = await _settlements(runtime)
    assert (audit.actor, audit.target, audit.reason) == ("canary", ended.snapshot_id, cycle.error)
    assert audit.details["cycle_id"] == ended.cycle_id
    assert audit.details["cycle_state"] == "promoted"

    # Once: a rollback after the settlement does not move the cycle again.
    await _change(client, admin_headers, runtime, "/rollback")
    await runtime.canary.evaluate()

    assert (await read_cycle(runtime, ended.cycle_id)).state == "promoted"
    examples = await read_examples(runtime, ended.items)
    assert {(e.status, e.rejections) for e in examples.values()} == {("accepted", 0)}
    assert len(await _settlements(runtime)) == 1


async def test_an_admins_rollback_after_an_inconclusive_canary_rolls_its_cycle_back(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    """Active already serves the baseline, so a rollback goes one release further back."""
    await stage_adapter(client, admin_headers, tmp_path, "general", seed=1)
    await _change(client, admin_headers, runtime, "/swap")
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)

    await _change(client, admin_headers, runtime, "/rollback")
    await runtime.canary.evaluate()
    await runtime.canary.evaluate()  # settled once: nothing is handed back twice

    cycle = await read_cycle(runtime, ended.cycle_id)
    assert cycle.state == "rolled_back"
    assert cycle.error is not None
    assert f"canary {ended.canary_id} ended inconclusive" in cycle.error
    assert f"no longer serves snapshot {ended.snapshot_id}" in cycle.error
    examples = await read_examples(runtime, ended.items)
    fresh, qa_made = examples["fresh"], examples["qa_made"]
    reason = f"cycle {ended.cycle_id} rolled back after canary {ended.canary_id} ended inconclusive"
    assert (fresh.status, fresh.rejections) == ("pending", 1)
    assert fresh.reject_reason is not None and fresh.reject_reason.startswith(reason)
    assert (qa_made.status, qa_made.rejections) == ("retired", 0)
    assert items_counted(runtime) == {"handed_back": 1.0, "retired": 1.0}
    [audit] = await _settlements(runtime)
    assert (audit.target, audit.details["cycle_state"]) == (ended.snapshot_id, "rolled_back")


async def test_a_snapshot_staged_over_an_inconclusive_one_rolls_its_cycle_back(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)

    _, restaged = await stage_adapter(client, admin_headers, tmp_path, "general", seed=1)
    await runtime.canary.evaluate()
    await runtime.canary.evaluate()

    cycle = await read_cycle(runtime, ended.cycle_id)
    assert cycle.state == "rolled_back"
    assert cycle.error is not None and f"(now {restaged})" in cycle.error
    fresh = (await read_examples(runtime, ended.items))["fresh"]
    assert (fresh.status, fresh.rejections) == ("pending", 1)
    assert fresh.reject_reason is not None and ended.cycle_id in fresh.reject_reason
    assert items_counted(runtime) == {"handed_back": 1.0, "retired": 1.0}
    assert len(await _settlements(runtime)) == 1


async def test_a_new_canary_of_the_same_shadow_continues_the_inconclusive_cycle(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)

    again = await start_canary(client, admin_headers, percent=10)

    assert (again["id"] != ended.canary_id, again["cycle_id"]) == (True, ended.cycle_id)
    cycle = await read_cycle(runtime, ended.cycle_id)
    assert (cycle.state, cycle.error) == ("canary", None)  # the last canary's reason went
    await runtime.canary.evaluate()  # it runs: nothing is settled
    assert (await read_cycle(runtime, ended.cycle_id)).state == "canary"
    assert await _settlements(runtime) == []

    # The cycle now ends as the new canary does.
    await client.post("/canary/abort", json={"reason": "no"}, headers=admin_headers)
    assert (await read_cycle(runtime, ended.cycle_id)).state == "rolled_back"
    fresh = (await read_examples(runtime, ended.items))["fresh"]
    assert (fresh.status, fresh.rejections) == ("pending", 1)


async def test_with_auto_an_inconclusive_cycle_gets_no_new_canary_by_itself(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    """The deadline passed once without a decision: another canary is an admin's call."""
    ended = await _inconclusive(client, admin_headers, tmp_path, runtime)
    auto = CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary.model_copy(update={"auto": True}),
        max_rejections=runtime.settings.trainer.max_rejections,
    )

    assert await auto.evaluate() is None

    assert auto.state is None
    assert (await read_cycle(runtime, ended.cycle_id)).state == "inconclusive"
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert (status["id"], status["status"]) == (ended.canary_id, "inconclusive")
