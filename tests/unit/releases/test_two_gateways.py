"""Several gateways on one database agree on the release."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.unit.releases.conftest import another_gateway
from twinloop.settings import GatewaySettings, Settings
from twinloop.testing.engine import FakeEngine


async def test_a_swap_through_one_gateway_reaches_the_other_within_a_second(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    before = await second_client.post("/answer", json={"question": "Q?"})
    assert before.status_code == 200, before.text
    assert before.json()["slot"] == "blue"

    swapped = await client.post("/swap", json={"generation": 1}, headers=admin_headers)
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
    swapped = await client.post("/swap", json={"generation": "latest"}, headers=admin_headers)
    assert swapped.status_code == 200, swapped.text

    async with another_gateway(settings, fake_engine) as restarted:
        answer = await restarted.post("/answer", json={"question": "Q?"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["slot"] == "green"


@pytest.mark.parametrize("generation", ["latest", 1])
async def test_two_gateways_swapping_at_once_one_wins_and_the_other_is_409(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, admin_headers: dict[str, str],
    fake_engine: FakeEngine, generation: object,
) -> None:  # fmt: skip
    # Both gateways read the release and reach the engine check before either writes: the
    # real race, caught-up state and all (nothing stubbed but the engines).
    engine_check = fake_engine.hold("/health")
    checks = len(fake_engine.calls("/health"))
    body = {"generation": generation, "reason": "race"}
    swaps = [
        asyncio.create_task(gateway.post("/swap", json=body, headers=admin_headers))
        for gateway in (client, second_client)
    ]
    deadline = time.monotonic() + 10
    while len(fake_engine.calls("/health")) < checks + 2:
        assert time.monotonic() < deadline, "both swaps did not reach the engine check"
        await asyncio.sleep(0.005)
    engine_check.set()
    responses = [await swap for swap in swaps]

    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["error"] == "ReleaseConflictError"
    assert "generation 2, not 1" in loser.json()["detail"]
    for gateway in (client, second_client):  # the loser caught up: both agree at once
        status = (await gateway.get("/status", headers=admin_headers)).json()
        assert (status["generation"], status["active_slot"]) == (2, "green")


async def test_a_generation_made_through_another_gateway_is_accepted_before_it_polls(
    client: httpx.AsyncClient, settings: Settings, fake_engine: FakeEngine,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    slow = settings.model_copy(update={"gateway": GatewaySettings(release_poll_s=3600)})
    async with another_gateway(slow, fake_engine) as behind:
        swapped = await client.post("/swap", json={"generation": 1}, headers=admin_headers)
        assert swapped.status_code == 200, swapped.text

        # The operator read generation 2 from the first gateway; the second has not polled.
        back = await behind.post("/swap", json={"generation": 2}, headers=admin_headers)

    assert back.status_code == 200, back.text
    assert (back.json()["generation"], back.json()["active_slot"]) == (3, "blue")


async def test_a_swap_with_latest_after_another_has_landed_swaps_again(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """ "latest" is the generation in force when a request arrives: a swap sent after another
    has landed swaps again (an operator who must not race sends the generation /status
    showed, and is refused if it moved)."""
    body = {"generation": "latest", "reason": "one after the other"}
    first = await client.post("/swap", json=body, headers=admin_headers)
    second = await client.post("/swap", json=body, headers=admin_headers)

    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert (second.json()["generation"], second.json()["active_slot"]) == (3, "blue")
