"""Two gateways on one PostgreSQL database change the release at once: exactly one wins;
a gateway's ingest and the trainer's stage at once: both changes stay on Shadow.

The real race: runtimes on the same database, each with its own connection pool, watcher
and catch-up; nothing is stubbed but the engines (`FakeEngine`, no vLLM), the router, the
document index and the adapter trainer. No engine or Chroma process is started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from api.app import create_app
from tests.shadow_changes import ingest_while_the_trainer_stages
from twinloop.db import migrate
from twinloop.db.models import AuditEntry, Release
from twinloop.db.session import create_engine
from twinloop.runtime import Runtime
from twinloop.settings import EngineSettings, GatewaySettings, Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer import daemon

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "postgres-race-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Gateways = tuple[httpx.AsyncClient, httpx.AsyncClient]


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:
    migrate.upgrade(postgres_database)
    return Settings(
        data_dir=tmp_path,
        database_url=postgres_database,
        admin_token=ADMIN_TOKEN,
        engines=EngineSettings(blue_port=18101, green_port=18102, retries=1),
    )


@pytest.fixture
def engines(pg_settings: Settings) -> FakeEngine:
    return FakeEngine(
        ports={pg_settings.engines.blue_port: "blue", pg_settings.engines.green_port: "green"}
    )


@asynccontextmanager
async def _gateway_app(
    settings: Settings, engines: FakeEngine, name: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    app: FastAPI = create_app(
        settings,
        engine_transport=engines.transport(),
        router=FakeRouter(),
        knowledge=FakeKnowledge(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield client, app.state.runtime


@asynccontextmanager
async def _gateway(
    settings: Settings, engines: FakeEngine, name: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with _gateway_app(settings, engines, name) as (client, _):
        yield client


@pytest.fixture
async def gateways(pg_settings: Settings, engines: FakeEngine) -> AsyncIterator[Gateways]:
    async with (
        _gateway(pg_settings, engines, "gateway-1") as one,
        _gateway(pg_settings, engines, "gateway-2") as two,
    ):
        yield one, two


async def _status(gateway: httpx.AsyncClient) -> dict[str, object]:
    response = await gateway.get("/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _release_rows(settings: Settings) -> tuple[int, int, int]:
    """(release rows, highest generation, swap and rollback audit entries) in the database."""
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            rows, top = (
                await conn.execute(select(func.count(), func.max(Release.generation)))
            ).one()
            changes = await conn.scalar(
                select(func.count()).where(
                    AuditEntry.action.in_(["release.swap", "release.rollback"])
                )
            )
    finally:
        await engine.dispose()
    return rows, top, changes or 0


async def _at_once(
    gateways: Gateways, path: str, body: dict[str, object], engines: FakeEngine | None = None
) -> list[httpx.Response]:
    """Send the same change through both gateways at once. With `engines`, both are held at
    the engine check (past their generation check, before their write) until both are there."""
    check = engines.hold("/health") if engines else None
    checks_before = len(engines.calls("/health")) if engines else 0
    sent = [asyncio.create_task(g.post(path, json=body, headers=ADMIN)) for g in gateways]
    if engines and check:
        deadline = time.monotonic() + 10
        while len(engines.calls("/health")) < checks_before + 2:
            assert time.monotonic() < deadline, "both changes did not reach the engine check"
            await asyncio.sleep(0.005)
        check.set()
    return [await task for task in sent]


def _one_won(responses: list[httpx.Response]) -> httpx.Response:
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["error"] == "ReleaseConflictError", loser.text
    return next(r for r in responses if r.status_code == 200)


@pytest.mark.parametrize("generation", ["latest", 1])
async def test_two_gateways_swapping_at_once_one_wins_and_the_other_is_409(
    gateways: Gateways, engines: FakeEngine, pg_settings: Settings, generation: object
) -> None:
    body = {"generation": generation, "reason": "race"}

    winner = _one_won(await _at_once(gateways, "/swap", body, engines))

    assert (winner.json()["generation"], winner.json()["active_slot"]) == (2, "green")
    for gateway in gateways:  # the loser caught up on its way out: both agree at once
        status = await _status(gateway)
        assert (status["generation"], status["active_slot"]) == (2, "green")
    assert await _release_rows(pg_settings) == (2, 2, 1)


@pytest.mark.parametrize("mode", ["generation", "latest"])
async def test_rounds_of_concurrent_swaps_and_rollbacks_never_undo_each_other(
    gateways: Gateways, engines: FakeEngine, pg_settings: Settings, tmp_path: Path, mode: str
) -> None:
    one, _ = gateways
    base = str((await _status(one))["slots"][0]["snapshot_id"])  # type: ignore[index]
    folder = write_fake_adapter(tmp_path / "src" / "law")
    adapter = await one.post(
        "/adapters", json={"path": str(folder), "domain": "law"}, headers=ADMIN
    )
    assert adapter.status_code == 201, adapter.text
    staged = await one.post(
        "/snapshots", json={"adapters": {"law": adapter.json()["id"]}}, headers=ADMIN
    )
    assert staged.status_code == 201, staged.text
    generation, rounds = 2, 20

    for i in range(rounds):
        path = "/swap" if i % 2 == 0 else "/rollback"
        if mode == "generation":  # as an operator who read /status sends it; not synchronised
            responses = await _at_once(gateways, path, {"generation": generation})
        else:  # both past their checks before either writes
            responses = await _at_once(gateways, path, {"generation": "latest"}, engines)

        winner = _one_won(responses)
        generation += 1
        assert winner.json()["generation"] == generation
        expected = staged.json()["id"] if path == "/swap" else base
        assert winner.json()["active_snapshot_id"] == expected, f"round {i}: {path}"
        for gateway in gateways:
            status = await _status(gateway)
            assert status["generation"] == generation, f"round {i}"

    assert await _release_rows(pg_settings) == (generation, generation, rounds)


@pytest.mark.parametrize("trainer_first", [True, False], ids=["trainer-first", "trainer-held"])
async def test_an_ingest_and_the_trainers_stage_at_once_keep_both_changes_on_shadow(
    pg_settings: Settings, engines: FakeEngine, trainer_first: bool
) -> None:
    # The gateway polls once an hour: what it knows of the trainer's release is only what
    # catching up reads. The trainer is another process in effect (QA off).
    slow = pg_settings.model_copy(update={"gateway": GatewaySettings(release_poll_s=3600)})
    no_qa = pg_settings.model_copy(
        update={"trainer": pg_settings.trainer.model_copy(update={"qa": False})}
    )
    async with (
        _gateway_app(slow, engines, "gateway-1") as (gateway, runtime),
        daemon.open_trainer(
            no_qa, trainer=FakeAdapterTrainer(), engine_transport=engines.transport()
        ) as trainer,
    ):
        raced = await ingest_while_the_trainer_stages(
            gateway, ADMIN, trainer, engines, runtime.releases, trainer_first=trainer_first
        )

    assert (raced.cycle.state, raced.cycle.error) == ("staged", None)
    assert {d: a.id for d, a in raced.shadow.adapters.items()} == raced.cycle.adapters
    assert raced.shadow.rag_versions["law"] == raced.ingested_version
    if not trainer_first:  # the trainer lost the race and made its snapshot again
        assert raced.shadow.snapshot_id == raced.cycle.snapshot_id
