"""Steps the canary tests share: stage a fake adapter to Shadow, start a canary; a training
cycle behind the staged snapshot, the items it learned, and what became of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from twinloop.db.models import TrainingExample, TrainingRun, TrainingRunItem
from twinloop.runtime import Runtime
from twinloop.states import CycleState, ItemRole, ItemStatus
from twinloop.testing.adapters import write_fake_adapter


async def stage_adapter(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    tmp_path: Path,
    domain: str = "law",
    *,
    seed: int = 0,
) -> tuple[str, str]:
    """A fake adapter for `domain` registered and staged to Shadow: its engine model name
    and the staged snapshot's id."""
    folder = write_fake_adapter(tmp_path / "src" / domain, seed=seed)
    adapter = await client.post(
        "/adapters", json={"path": str(folder), "domain": domain}, headers=headers
    )
    assert adapter.status_code == 201, adapter.text
    created = await client.post(
        "/snapshots", json={"adapters": {domain: adapter.json()["id"]}}, headers=headers
    )
    assert created.status_code == 201, created.text
    return str(adapter.json()["name"]), str(created.json()["id"])


async def start_canary(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    response = await client.post("/canary", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def awaiting_cycle(runtime: Runtime, snapshot_id: str) -> str:
    """A training cycle that staged `snapshot_id` and passed the QA gate."""
    cycle = TrainingRun(state=CycleState.AWAITING_CANARY, trigger="test", snapshot_id=snapshot_id)
    async with runtime.sessionmaker.begin() as session:
        session.add(cycle)
    return cycle.id


async def read_cycle(runtime: Runtime, cycle_id: str) -> TrainingRun:
    async with runtime.sessionmaker() as session:
        cycle = await session.get(TrainingRun, cycle_id)
    assert cycle is not None
    return cycle


async def learned(runtime: Runtime, cycle_id: str, **items: tuple[str, int]) -> dict[str, str]:
    """Examples the cycle trained on as its new items, each (source, earlier rejections);
    their ids by name."""
    examples = {
        name: TrainingExample(
            source=source,
            domain="law",
            question=f"{name}?",
            answer=name,
            status=ItemStatus.ACCEPTED,
            content_sha256=name,
            rejections=rejections,
        )
        for name, (source, rejections) in items.items()
    }
    async with runtime.sessionmaker.begin() as session:
        session.add_all(examples.values())
        await session.flush()
        session.add_all(
            TrainingRunItem(
                run_id=cycle_id,
                example_id=e.id,
                domain=e.domain,
                role=ItemRole.NEW,
                question=e.question,
                answer=e.answer,
            )
            for e in examples.values()
        )
    return {name: e.id for name, e in examples.items()}


async def read_examples(runtime: Runtime, ids: dict[str, str]) -> dict[str, TrainingExample]:
    async with runtime.sessionmaker() as session:
        found = await session.execute(
            select(TrainingExample).where(TrainingExample.id.in_(ids.values()))
        )
        by_id = {e.id: e for e in found.scalars()}
    return {name: by_id[id_] for name, id_ in ids.items()}


def items_counted(runtime: Runtime) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in runtime.metrics.registry.collect()
        if family.name == "twinloop_canary_items"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
