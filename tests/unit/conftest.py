"""A trainer process next to the gateway (QA off), for tests that follow items into a cycle;
adapters registered through the admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer import daemon
from twinloop.trainer.daemon import Trainer

Register = Callable[..., Awaitable[dict[str, object]]]


@pytest.fixture
def register(client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path) -> Register:
    """Register a tiny fake adapter through the admin API; returns its view."""

    async def _register(domain: str = "law", seed: int = 0) -> dict[str, object]:
        folder = write_fake_adapter(tmp_path / "src" / f"{domain}-{seed}", seed=seed)
        response = await client.post(
            "/adapters", json={"path": str(folder), "domain": domain}, headers=admin_headers
        )
        assert response.status_code == 201, response.text
        body: dict[str, object] = response.json()
        return body

    return _register


@pytest.fixture
def fake_trainer() -> FakeAdapterTrainer:
    return FakeAdapterTrainer()


@pytest.fixture
async def trainer(
    settings: Settings, fake_engine: FakeEngine, fake_trainer: FakeAdapterTrainer, app: Any
) -> AsyncIterator[Trainer]:
    """The trainer's services on the gateway's database; QA off (tests/unit/qa covers it)."""
    no_qa = settings.model_copy(
        update={"trainer": settings.trainer.model_copy(update={"qa": False})}
    )
    async with daemon.open_trainer(
        no_qa, trainer=fake_trainer, engine_transport=fake_engine.transport()
    ) as opened:
        yield opened


async def run_cycle(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    trainer: Trainer,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST /train (with an admin's `overrides`), let the trainer run it, and return
    GET /train/{id}."""
    body = {"overrides": overrides} if overrides is not None else None
    requested = await client.post("/train", json=body, headers=admin_headers)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    assert await trainer.cycles.claim(cycle_id)
    await trainer.runner.run(cycle_id)
    cycle: dict[str, Any] = (await client.get(f"/train/{cycle_id}", headers=admin_headers)).json()
    return cycle
