"""The answer cache through the gateway: a repeated temperature-0 question is answered
without the engine, stored as `cached`, never across a swap, never when sampled."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from twinloop.db.models import Answer
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine

QUESTION = {"question": "What is a tort?", "domain": "law", "use_rag": False}


def _engine_calls(engine: FakeEngine) -> int:
    return len(engine.calls("/v1/chat/completions"))


def _lookups(runtime: Runtime, route: str, outcome: str) -> float:
    labels = {"route": route, "outcome": outcome}
    value = runtime.metrics.registry.get_sample_value("twinloop_answer_cache_lookups_total", labels)
    return value or 0.0


async def _stored(runtime: Runtime, answer_id: str) -> Answer:
    async with runtime.sessionmaker() as session:
        return (await session.execute(select(Answer).where(Answer.id == answer_id))).scalar_one()


async def test_a_repeated_question_is_answered_from_the_cache_and_stored_as_cached(
    client: httpx.AsyncClient,
    fake_engine: FakeEngine,
    runtime: Runtime,
    admin_headers: dict[str, str],
) -> None:
    first = (await client.post("/answer", json=QUESTION)).json()
    again = await client.post("/answer", json={**QUESTION, "question": " What is  a tort? "})

    assert again.status_code == 200, again.text
    second = again.json()
    assert _engine_calls(fake_engine) == 1
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["answer"] == first["answer"]
    assert second["snapshot_id"] == first["snapshot_id"]
    assert second["answer_id"] != first["answer_id"]  # its own record, for its own feedback
    row = await _stored(runtime, second["answer_id"])
    assert (row.cached, row.answer, row.completion_tokens) == (True, first["answer"], None)
    assert (await _stored(runtime, first["answer_id"])).cached is False
    assert _lookups(runtime, "answer", "hit") == 1
    assert _lookups(runtime, "answer", "miss") == 1
    status = (await client.get("/status", headers=admin_headers)).json()["answer_cache"]
    assert (status["enabled"], status["entries"], status["hits"], status["misses"]) == (
        True, 1, 1, 1,
    )  # fmt: skip


async def test_other_parameters_or_domains_are_other_answers(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    await client.post("/answer", json=QUESTION)
    await client.post("/answer", json={**QUESTION, "max_tokens": 5})
    await client.post("/answer", json={**QUESTION, "domain": "med"})
    await client.post("/answer", json={**QUESTION, "question": "what is a tort?"})
    assert _engine_calls(fake_engine) == 4


async def test_a_swap_changes_the_key_so_no_answer_of_the_old_release_is_served(
    client: httpx.AsyncClient,
    fake_engine: FakeEngine,
    runtime: Runtime,
    admin_headers: dict[str, str],
) -> None:
    before = (await client.post("/answer", json=QUESTION)).json()
    staged = await client.post(
        "/snapshots", json={"adapters": {}, "reason": "a new release"}, headers=admin_headers
    )
    assert staged.status_code == 201, staged.text
    swapped = await client.post(
        "/swap", json={"reason": "test", "generation": "latest"}, headers=admin_headers
    )
    assert swapped.status_code == 200, swapped.text
    fake_engine.reply = "The new release's answer."

    after = (await client.post("/answer", json=QUESTION)).json()

    assert after["snapshot_id"] != before["snapshot_id"]
    assert (after["cached"], after["answer"]) == (False, "The new release's answer.")
    assert _engine_calls(fake_engine) == 2
    rolled = await client.post(
        "/rollback", json={"reason": "test", "generation": "latest"}, headers=admin_headers
    )
    assert rolled.status_code == 200, rolled.text
    # The old snapshot serves again: its own answer, which it gave before.
    back = (await client.post("/answer", json=QUESTION)).json()
    assert (back["snapshot_id"], back["cached"]) == (before["snapshot_id"], True)
    assert back["answer"] == before["answer"]


async def test_sampled_chats_and_streams_always_reach_the_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    messages = [{"role": "user", "content": "Tell me a story"}]
    for temperature in (0.7, None):
        body: dict[str, Any] = {"model": "general", "messages": messages}
        if temperature is not None:
            body["temperature"] = temperature
        for _ in range(2):
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["cached"] is False
    assert _engine_calls(fake_engine) == 4
    assert _lookups(runtime, "chat", "bypass") == 4


async def test_a_temperature_zero_chat_is_cached_with_its_parameters(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    body = {
        "model": "general",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "temperature": 0,
    }
    first = (await client.post("/v1/chat/completions", json=body)).json()
    second = (await client.post("/v1/chat/completions", json=body)).json()
    third = (await client.post("/v1/chat/completions", json={**body, "top_p": 0.5})).json()

    assert (first["cached"], second["cached"], third["cached"]) == (False, True, False)
    assert second["choices"] == first["choices"]
    assert second["id"] != first["id"]
    assert _engine_calls(fake_engine) == 2


async def test_previews_are_never_cached(
    client: httpx.AsyncClient, fake_engine: FakeEngine, admin_headers: dict[str, str]
) -> None:
    for _ in range(2):
        response = await client.post(
            "/answer", json={**QUESTION, "target": "shadow"}, headers=admin_headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is False
    assert _engine_calls(fake_engine) == 2
