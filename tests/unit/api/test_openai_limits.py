"""What /v1/chat/completions passes to the engine, and the limits it names when it refuses."""

from __future__ import annotations

import json

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine

CHAT = "/v1/chat/completions"
MAX_MESSAGES = 4
MAX_CHARS = 100
MAX_TOKENS = 64


@pytest.fixture
def settings(settings: Settings) -> Settings:
    gateway = settings.gateway.model_copy(
        update={
            "max_messages": MAX_MESSAGES,
            "max_request_chars": MAX_CHARS,
            "max_tokens": MAX_TOKENS,
        }
    )
    return settings.model_copy(update={"gateway": gateway})


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": "Capital?"}], **extra}


async def test_the_standard_parameters_reach_the_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    params: dict[str, object] = {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 16,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "u1",
        "n": 1,
    }
    response = await client.post(CHAT, json=_chat(**params))

    assert response.status_code == 200, response.text
    sent = fake_engine.calls(CHAT)[0]
    assert {name: sent[name] for name in params} == params


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ignore_eos", True),
        ("min_tokens", 1000),
        ("prompt_logprobs", 5),
        ("guided_json", {"type": "object"}),
        ("guided_regex", "a+"),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("logit_bias", {"50256": -100}),
        ("best_of", 4),
    ],
)
async def test_other_fields_are_refused_naming_them(
    client: httpx.AsyncClient, fake_engine: FakeEngine, field: str, value: object
) -> None:
    response = await client.post(CHAT, json=_chat(**{field: value}))

    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["fields"]] == [field]
    assert field in response.json()["detail"]
    assert fake_engine.calls(CHAT) == []


async def test_n_must_be_1(client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    response = await client.post(CHAT, json=_chat(n=64))

    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "n"
    assert fake_engine.calls(CHAT) == []


async def test_top_logprobs_is_bounded(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=_chat(logprobs=True, top_logprobs=21))

    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "top_logprobs"


async def test_unknown_message_fields_are_refused_empty_echoes_dropped(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    echoed = {"role": "assistant", "content": "Hi", "refusal": None, "tool_calls": []}
    ok = await client.post(
        CHAT,
        json=_chat(
            messages=[{"role": "user", "content": "Hi"}, echoed, {"role": "user", "content": "?"}]
        ),
    )
    refused = await client.post(
        CHAT, json=_chat(messages=[{"role": "user", "content": "Hi", "mm_processor_kwargs": {}}])
    )

    assert ok.status_code == 200, ok.text
    assert fake_engine.calls(CHAT)[0]["messages"][1] == {"role": "assistant", "content": "Hi"}
    assert refused.status_code == 422
    assert refused.json()["fields"][0]["field"] == "messages.0.mm_processor_kwargs"


async def test_null_stream_options_is_no_options(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    plain = await client.post(CHAT, json=_chat(stream_options=None))
    async with client.stream("POST", CHAT, json=_chat(stream=True, stream_options=None)) as r:
        status = r.status_code
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]

    assert plain.status_code == 200, plain.text
    assert status == 200
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])  # usage was not asked for


async def test_stream_options_without_stream_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=_chat(stream_options={"include_usage": True}))

    assert response.status_code == 422, response.text
    assert "stream_options" in response.json()["detail"]


async def test_too_many_messages_is_413_naming_the_limit(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    messages = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
    response = await client.post(CHAT, json=_chat(messages=messages))

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PayloadTooLargeError"
    assert f"{MAX_MESSAGES} messages" in response.json()["detail"]
    assert "gateway.max_messages" in response.json()["detail"]
    assert fake_engine.calls(CHAT) == []


async def test_too_many_characters_is_413_naming_the_limit(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "s" * (MAX_CHARS // 2)},
        {"role": "user", "content": [{"type": "text", "text": "u" * (MAX_CHARS // 2 + 1)}]},
    ]
    response = await client.post(CHAT, json=_chat(messages=messages))

    assert response.status_code == 413, response.text
    assert f"{MAX_CHARS} characters" in response.json()["detail"]
    assert "gateway.max_request_chars" in response.json()["detail"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_above_the_limit_is_422_naming_it(
    client: httpx.AsyncClient, field: str
) -> None:
    at_limit = await client.post(CHAT, json=_chat(**{field: MAX_TOKENS}))
    above = await client.post(CHAT, json=_chat(**{field: MAX_TOKENS + 1}))

    assert at_limit.status_code == 200, at_limit.text
    assert above.status_code == 422, above.text
    assert above.json()["detail"].startswith(f"{field}: ")
    assert f"limit of {MAX_TOKENS}" in above.json()["detail"]
    assert "gateway.max_tokens" in above.json()["detail"]


async def test_streamed_requests_are_checked_before_the_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=_chat(stream=True, max_tokens=MAX_TOKENS + 1))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"


async def test_answer_max_tokens_has_the_same_limit(client: httpx.AsyncClient) -> None:
    response = await client.post("/answer", json={"question": "Q?", "max_tokens": MAX_TOKENS + 1})

    assert response.status_code == 422, response.text
    assert f"limit of {MAX_TOKENS}" in response.json()["detail"]
