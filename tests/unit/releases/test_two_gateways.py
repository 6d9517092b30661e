"""Several gateways on one database agree on the release."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


@asynccontextmanager
async def _another_gateway(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway process, in effect: its own runtime on the same database."""
    other: FastAPI = create_app(
        settings,
        engine_transport=fake_engine.transport(),
        router=FakeRouter(),
        knowledge=FakeKnowledge(),
    )
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway-2") as c:
            yield c


@pytest.fixture
async def second_client(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    async with _another_gateway(settings, fake_engine) as c:
        yield c


async def test_a_swap_through_one_gateway_reaches_the_other_within_a_second(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    before = await second_client.post("/answer", json={"question": "Q?"})
    assert before.status_code == 200, before.text
    assert before.json()["slot"] == "blue"

    swapped = await client.post("/swap", headers=admin_headers)
    started = time.monotonic()
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["active_slot"] == "green"

    while (await second_client.get("/status", headers=admin_headers)).json()[
        "active_slot"
    ] != "green":
        assert time.monotonic() - started < 1.0, "the second gateway did not follow in 1 s"
        await asyncio.sleep(0.02)
    after = await second_client.post("/answer", json={"question": "Q?"})
    assert after.status_code == 200, after.text
    assert after.json()["slot"] == "green"


async def test_a_stale_generation_is_refused_so_two_operators_do_not_swap_back(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    first = await client.post("/swap", json={"generation": 1}, headers=admin_headers)
    second = await second_client.post("/swap", json={"generation": 1}, headers=admin_headers)

    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (409, "ReleaseConflictError")
    assert "generation 2, not 1" in second.json()["detail"]
    status = (await second_client.get("/status", headers=admin_headers)).json()
    assert (status["active_slot"], status["generation"]) == ("green", 2)


async def test_a_gateway_restart_reads_the_release_from_the_database(
    client: httpx.AsyncClient, settings: Settings, fake_engine: FakeEngine,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    assert (await client.post("/swap", headers=admin_headers)).status_code == 200

    async with _another_gateway(settings, fake_engine) as restarted:
        answer = await restarted.post("/answer", json={"question": "Q?"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["slot"] == "green"


async def test_two_gateways_writing_the_same_generation_collide_instead_of_both_winning(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    second_runtime = second_client._transport.app.state.runtime  # type: ignore[attr-defined]

    async def no_catch_up() -> None:  # the race window: gateway 2 has not seen the swap yet
        return None

    monkeypatch.setattr(second_runtime.releases, "_catch_up", no_catch_up)
    monkeypatch.setattr(second_runtime.releases, "refresh", no_catch_up)
    first = await client.post("/swap", headers=admin_headers)
    second = await second_client.post("/swap", headers=admin_headers)

    assert first.status_code == 200
    assert second.status_code == 409
    assert "at the same moment" in second.json()["detail"]
    assert second_runtime.releases.state.generation == 1  # its pointer did not move
