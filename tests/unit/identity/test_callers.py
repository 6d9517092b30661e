"""Who asked: /answer and /v1 stay open; a key binds the answer and scopes the end-user id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import NewKey
from twinloop.db.models import Answer
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Q?"}], "user": "alice"}


async def _row(runtime: Runtime, answer_id: str) -> Answer:
    async with runtime.sessionmaker() as session:
        row = (await session.execute(select(Answer).where(Answer.id == answer_id))).scalar_one()
    return row


async def test_a_wrong_bearer_on_answer_and_v1_is_answered_as_anonymous(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    wrong = {"Authorization": "Bearer not-a-key"}

    answered = await client.post(
        "/answer", json={"question": "Q?", "user_id": "alice"}, headers=wrong
    )
    chat = await client.post("/v1/chat/completions", json=CHAT, headers=wrong)

    assert (answered.status_code, chat.status_code) == (200, 200)
    row = await _row(runtime, answered.json()["answer_id"])
    assert (row.api_key_id, row.user_id) == (None, "alice")
    assert (await _row(runtime, chat.json()["id"].removeprefix("chatcmpl-"))).api_key_id is None
    metrics = (await client.get("/metrics")).text
    assert 'twinloop_auth_failures_total{reason="invalid",route="/answer"} 1.0' in metrics


async def test_a_key_binds_the_answer_and_scopes_the_user_under_it(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    shop, clinic = await new_key("client"), await new_key("client")

    first = await client.post(
        "/answer", json={"question": "Q?", "user_id": "alice"}, headers=shop.headers
    )
    second = await client.post(
        "/answer", json={"question": "Q?", "user_id": "alice"}, headers=clinic.headers
    )
    unnamed = await client.post("/answer", json={"question": "Q?"}, headers=shop.headers)
    chat = await client.post("/v1/chat/completions", json=CHAT, headers=shop.headers)

    rows = [await _row(runtime, r.json()["answer_id"]) for r in (first, second, unnamed)]
    assert [(r.api_key_id, r.user_id) for r in rows] == [
        (shop.id, f"{shop.id}:alice"), (clinic.id, f"{clinic.id}:alice"), (shop.id, None),
    ]  # fmt: skip
    assert chat.status_code == 200, chat.text
    chat_row = await _row(runtime, chat.json()["id"].removeprefix("chatcmpl-"))
    assert (chat_row.api_key_id, chat_row.user_id) == (shop.id, f"{shop.id}:alice")


async def test_a_streamed_chat_is_bound_to_its_key(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("client")

    async with client.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=key.headers
    ) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]

    answer_id = json.loads(lines[0].removeprefix("data: "))["id"].removeprefix("chatcmpl-")
    row = await _row(runtime, answer_id)
    assert (row.api_key_id, row.user_id) == (key.id, f"{key.id}:alice")


async def test_previewing_shadow_needs_the_admin_role(
    client: httpx.AsyncClient, new_key: NewKey
) -> None:
    body = {"question": "Q?", "target": "shadow"}
    for role in ("client", "ingest"):
        key = await new_key(role)
        refused = await client.post("/answer", json=body, headers=key.headers)
        assert refused.status_code == 403, role
    admin = await new_key("admin")
    assert (await client.post("/answer", json=body, headers=admin.headers)).status_code == 200


@pytest.fixture
async def closed_client(
    settings: Settings, fake_engine: FakeEngine, fake_knowledge: FakeKnowledge
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with TWINLOOP_AUTH__REQUIRE_CLIENT_KEY=true."""
    from api.app import create_app

    closed = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"require_client_key": True})}
    )
    app = create_app(
        closed, engine_transport=fake_engine.transport(), router=FakeRouter(),
        knowledge=fake_knowledge,
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


async def test_require_client_key_closes_answer_and_v1(
    closed_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    anonymous = await closed_client.post("/answer", json={"question": "Q?"})
    wrong = await closed_client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"}
    )
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    made = await closed_client.post(
        "/keys", json={"name": "app", "role": "client"}, headers=admin_headers
    )
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await closed_client.post("/answer", json={"question": "Q?"}, headers=key)).is_success
    assert (await closed_client.post("/v1/chat/completions", json=CHAT, headers=key)).is_success
    assert (await closed_client.get("/v1/models")).status_code == 401
    assert (await closed_client.get("/v1/models", headers=key)).status_code == 200
