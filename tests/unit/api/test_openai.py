from __future__ import annotations

import asyncio
import gc
import json

import httpx
from sqlalchemy import select

from twinloop.db.models import Answer
from twinloop.inference.schemas import ChatCompletionRequest
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine

CHAT = "/v1/chat/completions"


def _chat(model: str = "auto", **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Capital of France?"}],
        **extra,
    }


async def test_models_lists_auto_the_domains_and_the_base_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")

    assert response.status_code == 200, response.text
    ids = [m["id"] for m in response.json()["data"]]
    assert ids == ["auto", "law", "med", "fin", "general", "smollm2-135m-instruct"]


async def test_chat_completion_keeps_openai_shape_and_is_stored(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    response = await client.post(CHAT, json=_chat("law", temperature=0.3, top_p=0.9))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "law"
    assert body["choices"][0]["message"]["content"] == fake_engine.reply
    # The engine's reply is relayed whole, fields the gateway does not read included.
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    assert body["created"] == 0
    sent = fake_engine.calls(CHAT)[0]
    assert sent["model"] == "smollm2-135m-instruct"
    assert (sent["temperature"], sent["top_p"]) == (0.3, 0.9)  # allowed parameters pass on
    answer_id = body["id"].removeprefix("chatcmpl-")
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, answer_id)
    assert row is not None
    assert (row.route, row.domain, row.question) == ("chat", "law", "Capital of France?")
    assert (row.prompt_tokens, row.completion_tokens, row.finish_reason) == (9, 7, "stop")


async def test_base_model_name_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=_chat("smollm2-135m-instruct"))
    assert response.status_code == 200


async def test_unknown_model_is_404_listing_the_models(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=_chat("gpt-9"))

    assert response.status_code == 404
    assert "gpt-9" in response.json()["detail"]
    assert "auto" in response.json()["detail"]


async def test_missing_messages_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={"model": "auto"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "messages"


async def test_streaming_relays_chunks_then_done_and_stores_the_answer(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    async with client.stream("POST", CHAT, json=_chat(stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == fake_engine.reply
    assert len(chunks) == len(fake_engine.reply.split(" "))  # usage chunk not asked for: dropped
    assert {c["model"] for c in chunks} == {"auto"}
    answer_id = chunks[0]["id"].removeprefix("chatcmpl-")
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, answer_id)
    assert row is not None
    assert row.answer == fake_engine.reply
    assert row.completion_tokens == len(fake_engine.reply.split(" "))


async def test_streaming_passes_usage_when_asked(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    body = _chat(stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]

    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == len(fake_engine.reply.split(" "))  # one per chunk


async def test_streaming_with_engine_down_is_503_before_any_chunk(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    fake_engine.down.add("blue")

    response = await client.post(CHAT, json=_chat(stream=True))

    assert response.status_code == 503
    assert response.json()["error"] == "EngineUnavailableError"
    async with runtime.sessionmaker() as session:
        assert (await session.execute(select(Answer))).first() is None


async def test_unbounded_requests_get_the_default_max_tokens(
    client: httpx.AsyncClient, fake_engine: FakeEngine, settings: Settings
) -> None:
    responses = [
        await client.post(CHAT, json=_chat()),
        await client.post(CHAT, json=_chat(max_tokens=7)),
        await client.post(CHAT, json=_chat(max_completion_tokens=9)),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200]
    sent = fake_engine.calls(CHAT)
    assert sent[0]["max_tokens"] == settings.gateway.default_max_tokens
    assert sent[1]["max_tokens"] == 7
    assert "max_tokens" not in sent[2]


async def test_a_stream_nobody_reads_frees_its_slot(runtime: Runtime) -> None:
    """The client went away after the first chunk was fetched but before the response
    started streaming: the in-flight count must not leak (a later swap would wait to drain)."""
    slot = runtime.releases.state.active_slot.value
    stream = await runtime.answers.stream_chat(ChatCompletionRequest(**_chat("law", stream=True)))
    assert runtime.releases.inflight.count(slot) == 1

    del stream
    gc.collect()
    for _ in range(5):  # the event loop's finaliser closes the relay on a later turn
        await asyncio.sleep(0)

    assert runtime.releases.inflight.count(slot) == 0


async def test_a_stream_the_client_drops_is_stored_abandoned_with_what_it_got(
    runtime: Runtime, fake_engine: FakeEngine
) -> None:
    """A dropped stream is a weak signal for the miner: the partial answer is stored with
    `finish_reason` `abandoned`, under the user who asked, and counts in no canary arm."""
    fake_engine.reply = "Paris is the capital of France, and it has been for a long time."
    request = ChatCompletionRequest(**_chat("law", stream=True, user="u7"))
    stream = await runtime.answers.stream_chat(request)
    got, answer_id = "", ""
    async for batch in stream:  # until the output screen has released some text
        for chunk in batch:
            answer_id = chunk["id"]
            got += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
        if got:
            break

    await stream.aclose()  # type: ignore[attr-defined]
    await runtime.answers.wait_for_stores()

    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, answer_id.removeprefix("chatcmpl-"))
    assert row is not None
    assert (row.finish_reason, row.user_id) == ("abandoned", "u7")
    # What the client was sent, not what the engine had made: the screen holds a tail back.
    assert got and fake_engine.reply.startswith(got) and got != fake_engine.reply
    assert row.answer == got
