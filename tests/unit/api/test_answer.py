from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from twinloop.db.models import Answer
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine


async def test_answer_returns_the_engine_answer_and_where_it_came_from(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    started = time.perf_counter()
    response = await client.post("/answer", json={"question": "Capital of France?"})
    wall_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == fake_engine.reply
    assert body["domain"] == "general"
    assert body["slot"] == "blue"
    assert body["adapter"] is None
    assert len(body["snapshot_id"]) == 32
    assert 0 < body["latency_ms"] <= wall_ms  # the engine call, inside the request
    sent = fake_engine.calls("/v1/chat/completions")[0]
    assert sent["model"] == "smollm2-135m-instruct"
    assert sent["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert sent["temperature"] == 0.0


async def test_every_answer_is_persisted_for_feedback(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/answer",
        json={"question": "Q?", "domain": "law", "user_id": "u1", "session_id": "s1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()

    async with runtime.sessionmaker() as session:
        row = (
            await session.execute(select(Answer).where(Answer.id == body["answer_id"]))
        ).scalar_one()
    assert (row.question, row.answer, row.domain, row.slot) == ("Q?", body["answer"], "law", "blue")
    assert (row.user_id, row.session_id, row.snapshot_id) == ("u1", "s1", body["snapshot_id"])
    assert row.completion_tokens == 7
    assert row.is_preview is False


async def test_max_tokens_is_passed_to_the_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    response = await client.post("/answer", json={"question": "Q?", "max_tokens": 5})

    assert response.status_code == 200, response.text
    assert response.json()["answer"] == fake_engine.reply
    assert fake_engine.calls("/v1/chat/completions")[0]["max_tokens"] == 5


async def test_missing_question_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/answer", json={"domain": "law"})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationError"
    assert "question" in body["detail"]
    assert body["fields"][0]["field"] == "question"


async def test_bad_fields_are_422_each_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/answer", json={"question": "", "max_tokens": 0, "surprise": 1})

    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert fields == {"question", "max_tokens", "surprise"}


async def test_body_that_is_not_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/answer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"


async def test_unknown_domain_is_422_listing_the_known_ones(client: httpx.AsyncClient) -> None:
    response = await client.post("/answer", json={"question": "Q?", "domain": "astrology"})

    assert response.status_code == 422
    assert "astrology" in response.json()["detail"]
    assert "law, med, fin, general" in response.json()["detail"]


async def test_unreachable_engine_is_503_json_and_nothing_is_stored(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    fake_engine.down.add("blue")

    response = await client.post("/answer", json={"question": "Q?"})

    assert response.status_code == 503
    assert response.json()["error"] == "EngineUnavailableError"
    assert "blue" in response.json()["detail"]
    async with runtime.sessionmaker() as session:
        assert (await session.execute(select(Answer))).first() is None


async def test_an_engine_port_nothing_listens_on_is_503_over_a_real_connection(
    dead_engine_client: httpx.AsyncClient, closed_ports: tuple[int, int]
) -> None:
    response = await dead_engine_client.post("/answer", json={"question": "Hi"})

    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "EngineUnavailableError"
    assert f"127.0.0.1:{closed_ports[0]} is unreachable" in body["detail"]


async def test_engine_rejecting_the_request_is_400_with_its_message(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    fake_engine.status_override = (400, {"error": {"message": "context length exceeded"}})

    response = await client.post("/answer", json={"question": "Q?"})

    assert response.status_code == 400
    assert "context length exceeded" in response.json()["detail"]


async def test_engine_server_error_is_502(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    fake_engine.status_override = (500, {"error": {"message": "boom"}})

    response = await client.post("/answer", json={"question": "Q?"})

    assert response.status_code == 502
    assert "boom" in response.json()["detail"]


async def test_responses_carry_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": "abc123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32


async def test_the_router_picks_the_domain_and_reports_its_score(
    client: httpx.AsyncClient,
) -> None:
    routed = await client.post("/answer", json={"question": "Is this contract binding?"})
    explicit = await client.post(
        "/answer", json={"question": "Is this contract binding?", "domain": "med"}
    )

    assert (routed.status_code, explicit.status_code) == (200, 200)
    assert (routed.json()["domain"], routed.json()["route_score"]) == ("law", 0.9)
    assert (explicit.json()["domain"], explicit.json()["route_score"]) == ("med", None)
    metrics = (await client.get("/metrics")).text
    assert 'twinloop_routes_total{domain="law",fallback="false"} 1.0' in metrics


async def test_auto_model_routes_on_the_last_user_message(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "I have a fever"},
            {"role": "assistant", "content": "Sorry to hear."},
            {"role": "user", "content": "Should I sell my stock?"},
        ],
    }
    response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 200, response.text
    answer_id = response.json()["id"].removeprefix("chatcmpl-")
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, answer_id)
    assert row is not None and row.domain == "fin"
