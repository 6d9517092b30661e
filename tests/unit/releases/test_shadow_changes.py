"""Shadow changes from ingest, the trainer and operators never take each other back.

Each snapshot is derived under the release lock from what Shadow serves then, and derived
again from the winner's release when another process stages first (`change_shadow`). The
trainer and a second gateway are other processes in effect: their own release controllers
on the same SQLite database. Gateways here poll the release once an hour, so what one
gateway knows of another process's change is only what catching up reads.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from tests.shadow_changes import (
    LOAD_ADAPTER,
    ingest_law_document,
    ingest_while_the_trainer_stages,
    until,
)
from tests.unit.conftest import Register
from twinloop.db.models import Release, Snapshot
from twinloop.releases.state import SlotSnapshot
from twinloop.runtime import Runtime
from twinloop.settings import GatewaySettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.trainer.daemon import Trainer

Headers = dict[str, str]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"gateway": GatewaySettings(release_poll_s=3600)})


async def _ever_staged(runtime: Runtime) -> set[str]:
    """Every snapshot any release put on a slot."""
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(Release))).scalars().all()
    return {r.blue_snapshot_id for r in rows} | {r.green_snapshot_id for r in rows}


async def _snapshot_count(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Snapshot)) or 0


def _adapter_ids(serving: SlotSnapshot) -> dict[str, str]:
    return {domain: ref.id for domain, ref in serving.adapters.items()}


async def _snapshot_racing_an_ingest(
    client: httpx.AsyncClient,
    other_gateway: httpx.AsyncClient,
    headers: Headers,
    fake_engine: FakeEngine,
    body: dict[str, object],
) -> tuple[httpx.Response, int]:
    """POST /snapshots with `body`, held at loading its adapter (past deriving, before its
    release is written) while the other gateway ingests a law document and stages it.
    Returns the answer and the ingest's RAG version."""
    loading = fake_engine.hold(LOAD_ADAPTER)
    staging = asyncio.create_task(client.post("/snapshots", json=body, headers=headers))
    await until(lambda: fake_engine.calls(LOAD_ADAPTER) or staging.done())
    version = await ingest_law_document(other_gateway, headers)
    loading.set()
    return await staging, version


def _shadow_changes(runtime: Runtime, outcome: str) -> float:
    sample = runtime.metrics.registry.get_sample_value(
        "twinloop_shadow_changes_total", {"outcome": outcome}
    )
    return sample or 0.0


# -- ingest and the trainer --------------------------------------------------------------


@pytest.mark.parametrize("trainer_first", [True, False], ids=["trainer-first", "trainer-held"])
async def test_an_ingest_and_the_trainers_stage_at_once_keep_both_changes_on_shadow(
    client: httpx.AsyncClient,
    admin_headers: Headers,
    trainer: Trainer,
    fake_engine: FakeEngine,
    runtime: Runtime,
    trainer_first: bool,
) -> None:
    raced = await ingest_while_the_trainer_stages(
        client, admin_headers, trainer, fake_engine, runtime.releases, trainer_first=trainer_first
    )

    assert (raced.cycle.state, raced.cycle.error) == ("staged", None)
    assert _adapter_ids(raced.shadow) == raced.cycle.adapters  # the trainer's adapters
    assert raced.shadow.rag_versions["law"] == raced.ingested_version  # and the ingest's RAG
    assert "law" in raced.shadow.adapters


async def test_a_trainer_that_lost_the_race_stages_its_adapters_on_the_winners_snapshot(
    client: httpx.AsyncClient,
    admin_headers: Headers,
    trainer: Trainer,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    raced = await ingest_while_the_trainer_stages(
        client, admin_headers, trainer, fake_engine, runtime.releases, trainer_first=False
    )

    # The snapshot it made first (on Shadow's snapshot before the ingest) was never staged;
    # the one it made again is recorded as the cycle's and is what Shadow serves.
    async with runtime.sessionmaker() as session:
        made = (
            (await session.execute(select(Snapshot).where(Snapshot.created_by == "trainer")))
            .scalars()
            .all()
        )
    (again,) = [s for s in made if s.id == raced.cycle.snapshot_id]
    (first,) = [s for s in made if s is not again]
    assert raced.shadow.snapshot_id == again.id
    assert first.adapters == again.adapters and first.parent_id != again.parent_id
    assert f"{first.id} was made on {first.parent_id}, which Shadow no longer" in again.reason
    assert first.id not in await _ever_staged(runtime)
    assert len(fake_engine.calls(LOAD_ADAPTER)) == 1  # the adapter was loaded once


# -- operators ----------------------------------------------------------------------------


async def test_an_operator_snapshot_with_a_generation_that_moved_is_refused_before_it_is_made(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin_headers: Headers,
    register: Register,
    runtime: Runtime,
) -> None:
    adapter = await register("law")
    await ingest_law_document(second_client, admin_headers)  # generation 2; not polled here
    before = await _snapshot_count(runtime)

    refused = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}, "generation": 1},
        headers=admin_headers,
    )  # fmt: skip

    assert refused.status_code == 409, refused.text
    assert "generation 2, not 1" in refused.json()["detail"]
    assert await _snapshot_count(runtime) == before  # refused before anything was made
    shadow = runtime.releases.state.serving(runtime.releases.state.shadow_slot)
    assert (shadow.adapters, shadow.rag_versions) == ({}, {"law": 1})
    assert _shadow_changes(runtime, "refused") == 1


async def test_an_operator_snapshot_that_loses_the_race_with_a_generation_is_refused_not_retried(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin_headers: Headers,
    register: Register,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    adapter = await register("law")

    refused, version = await _snapshot_racing_an_ingest(
        client, second_client, admin_headers, fake_engine,
        {"adapters": {"law": adapter["id"]}, "generation": 1},
    )  # fmt: skip

    assert refused.status_code == 409, refused.text
    assert "generation 2, not 1" in refused.json()["detail"]
    assert len(fake_engine.calls(LOAD_ADAPTER)) == 1  # never derived and staged again
    state = runtime.releases.state
    shadow = state.serving(state.shadow_slot)
    assert state.generation == 2
    assert (shadow.adapters, shadow.rag_versions) == ({}, {"law": version})


async def test_an_operator_snapshot_without_a_generation_that_loses_the_race_is_made_again(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin_headers: Headers,
    register: Register,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    adapter = await register("law")

    staged, version = await _snapshot_racing_an_ingest(
        client, second_client, admin_headers, fake_engine, {"adapters": {"law": adapter["id"]}}
    )

    assert staged.status_code == 201, staged.text
    assert staged.json()["rag_versions"] == {"law": version}  # on top of the ingest's
    shadow = runtime.releases.state.serving(runtime.releases.state.shadow_slot)
    assert shadow.snapshot_id == staged.json()["id"]
    assert _adapter_ids(shadow) == {"law": adapter["id"]}
    assert shadow.rag_versions == {"law": version}
    assert _shadow_changes(runtime, "rederived") == 1


async def test_an_operator_snapshot_from_active_keeps_the_documents_shadow_shows(
    client: httpx.AsyncClient, admin_headers: Headers, register: Register, runtime: Runtime
) -> None:
    version = await ingest_law_document(client, admin_headers)  # Shadow only; Active has none
    adapter = await register("law")

    staged = await client.post(
        "/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin_headers
    )

    assert staged.status_code == 201, staged.text
    shadow = runtime.releases.state.serving(runtime.releases.state.shadow_slot)
    assert shadow.rag_versions == {"law": version}
    assert _adapter_ids(shadow) == {"law": adapter["id"]}
