"""The per-user training cap counts users per key: the source of a feedback item is scoped."""

from __future__ import annotations

import httpx

from tests.conftest import ApiKey, NewKey
from twinloop.runtime import Runtime
from twinloop.training import repository
from twinloop.training.steps.collect import _candidate


async def _thumbs_up(
    client: httpx.AsyncClient, key: ApiKey, feedback_id: str, user_id: str | None
) -> None:
    body: dict[str, object] = {"question": f"Q {feedback_id}?", "domain": "fin"}
    if user_id is not None:
        body["user_id"] = user_id
    served = await client.post("/answer", json=body, headers=key.headers)
    assert served.status_code == 200, served.text
    item = {"type": "feedback", "id": feedback_id, "answer_id": served.json()["answer_id"],
            "rating": "up"}  # fmt: skip
    response = await client.post("/ingest", json={"items": [item]}, headers=key.headers)
    assert response.status_code == 202, response.text


async def test_two_apps_alice_are_two_sources_and_a_keys_unnamed_users_one(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    shop, clinic = await new_key("client"), await new_key("client")
    await _thumbs_up(client, shop, "f1", "alice")
    await _thumbs_up(client, clinic, "f2", "alice")
    await _thumbs_up(client, shop, "f3", None)
    await _thumbs_up(client, clinic, "f4", None)

    async with runtime.sessionmaker() as session:
        pending = await repository.pending_examples(session)

    sources = [_candidate(example, user).source for example, user in pending]
    assert sources == [
        f"user:{shop.id}:alice", f"user:{clinic.id}:alice", f"user:{shop.id}", f"user:{clinic.id}",
    ]  # fmt: skip
