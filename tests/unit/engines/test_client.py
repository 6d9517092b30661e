from __future__ import annotations

import asyncio

import httpx
import pytest

from twinloop.engines.client import (
    ChatResult,
    EngineClient,
    EngineModelNotFoundError,
    EngineRejectedRequestError,
    Usage,
)
from twinloop.errors import EngineResponseError, EngineTimeoutError, EngineUnavailableError
from twinloop.settings import Settings
from twinloop.testing.engine import BASE_MODEL, FakeEngine, already_loaded


def _client(handler: httpx.MockTransport, retries: int = 2) -> EngineClient:
    http = httpx.AsyncClient(transport=handler)
    return EngineClient(name="blue", base_url="http://engine:1", http=http, retries=retries)


async def test_connection_refused_is_retried_then_succeeds() -> None:
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    result = await _client(httpx.MockTransport(handle)).chat({"model": "m", "messages": []})

    assert attempts == 3
    assert result.text == "hi"


async def test_retries_are_bounded_and_end_in_engine_unavailable() -> None:
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EngineUnavailableError, match="unreachable"):
        await _client(httpx.MockTransport(handle), retries=2).chat({"model": "m"})
    assert attempts == 3


async def test_a_read_timeout_is_never_retried() -> None:
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(EngineTimeoutError):
        await _client(httpx.MockTransport(handle)).chat({"model": "m"})
    assert attempts == 1  # the engine may be generating: a retry would generate twice


async def _reply(body: object) -> ChatResult:
    client = _client(httpx.MockTransport(lambda _: httpx.Response(200, json=body)))
    return await client.chat({"model": "m", "messages": []})


async def test_a_reply_is_read_into_a_chat_result() -> None:
    reply = {
        "id": "chatcmpl-1",
        "model": "law-abc",
        "choices": [
            {"index": 0, "message": {"content": "Paris."}, "finish_reason": "length"},
            {"index": 1, "message": {"content": "Lyon."}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }

    result = await _reply(reply)

    assert (result.text, result.finish_reason, result.model) == ("Paris.", "length", "law-abc")
    assert result.usage == Usage(prompt_tokens=9, completion_tokens=2)
    assert result.has_message
    assert result.raw == reply  # kept whole for the OpenAI route to relay


@pytest.mark.parametrize("choices", [None, [], [None], [{}], [{"message": None}]])
async def test_a_reply_without_a_message_is_empty_not_an_error(choices: object) -> None:
    reply = {"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 0}}
    if choices is not None:
        reply["choices"] = choices

    result = await _reply(reply)

    assert (result.text, result.finish_reason, result.has_message) == ("", None, False)
    assert result.usage == Usage(prompt_tokens=3, completion_tokens=0)


@pytest.mark.parametrize("content", [None, ""])
async def test_an_empty_message_is_empty_text(content: str | None) -> None:
    result = await _reply({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]})

    assert (result.text, result.finish_reason, result.has_message) == ("", "stop", True)


@pytest.mark.parametrize(
    "usage", [None, {}, "n/a", {"prompt_tokens": "9", "completion_tokens": True}]
)
async def test_absent_or_malformed_usage_has_no_counts(usage: object) -> None:
    reply: dict[str, object] = {"choices": [{"message": {"content": "hi"}}]}
    if usage is not None:
        reply["usage"] = usage

    result = await _reply(reply)

    assert result.usage == Usage(prompt_tokens=None, completion_tokens=None)
    assert (result.text, result.model) == ("hi", None)


async def test_a_reply_that_is_not_an_object_is_an_engine_response_error() -> None:
    with pytest.raises(EngineResponseError, match="unexpected JSON"):
        await _reply([{"message": {"content": "hi"}}])


async def test_a_stream_broken_after_the_first_byte_is_raised_not_retried() -> None:
    attempts = 0

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b'data: {"choices": [{"delta": {"content": "Pa"}}]}\n\n'
            raise httpx.RemoteProtocolError("peer closed")

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return httpx.Response(200, stream=Broken())

    chunks = []
    with pytest.raises(EngineUnavailableError, match="broke off"):
        async for chunk in _client(httpx.MockTransport(handle)).stream_chat({"model": "m"}):
            chunks.append(chunk)
    assert attempts == 1
    assert len(chunks) == 1


async def test_error_status_becomes_an_error_with_the_engine_message() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(400, json={"error": {"message": "too long"}})
        return httpx.Response(503, text="overloaded")

    client = _client(httpx.MockTransport(handle))
    with pytest.raises(EngineRejectedRequestError, match="too long"):
        await client.chat({"model": "m"})
    with pytest.raises(EngineResponseError, match="503: overloaded"):
        await client.list_models()


async def test_non_json_body_is_an_engine_response_error() -> None:
    client = _client(httpx.MockTransport(lambda r: httpx.Response(200, text="<html>")))
    with pytest.raises(EngineResponseError, match="not JSON"):
        await client.chat({"model": "m"})


async def test_adapter_calls_use_vllm_runtime_lora_endpoints() -> None:
    seen: list[tuple[str, bytes]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.content))
        return httpx.Response(200, text="Success")

    client = _client(httpx.MockTransport(handle))
    await client.load_adapter("law-abc", "/data/adapters/abc")
    await client.unload_adapter("law-abc")

    assert seen[0] == (
        "/v1/load_lora_adapter",
        b'{"lora_name":"law-abc","lora_path":"/data/adapters/abc"}',
    )
    assert seen[1][0] == "/v1/unload_lora_adapter"


async def test_loading_an_adapter_the_engine_already_serves_is_done() -> None:
    """Another process loaded it first: vLLM's 400 "already loaded" is no failure."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=already_loaded("law-abc"))

    await _client(httpx.MockTransport(handle)).load_adapter("law-abc", "/data/adapters/abc")


async def test_other_refused_loads_are_still_errors() -> None:
    answers = iter(
        [
            httpx.Response(400, json=already_loaded("law-other")),  # not the one asked for
            httpx.Response(400, json={"error": {"message": "No adapter found for /x"}}),
            httpx.Response(404, json=already_loaded("law-abc")),  # not a refused load
        ]
    )
    client = _client(httpx.MockTransport(lambda request: next(answers)))

    with pytest.raises(EngineRejectedRequestError, match="law-other"):
        await client.load_adapter("law-abc", "/x")
    with pytest.raises(EngineRejectedRequestError, match="No adapter found"):
        await client.load_adapter("law-abc", "/x")
    with pytest.raises(EngineModelNotFoundError):
        await client.load_adapter("law-abc", "/x")


async def test_two_processes_loading_one_adapter_at_once_both_succeed(
    fake_engine: FakeEngine, settings: Settings
) -> None:
    """Each process has its own client; the engine loads the adapter once."""
    url = f"http://127.0.0.1:{settings.engines.blue_port}"
    async with httpx.AsyncClient(transport=fake_engine.transport()) as http:
        gateway, trainer = (EngineClient(name="blue", base_url=url, http=http) for _ in range(2))

        await asyncio.gather(
            gateway.load_adapter("law-abc", "/data/adapters/abc"),
            trainer.load_adapter("law-abc", "/data/adapters/abc"),
        )

        assert len(fake_engine.calls("/v1/load_lora_adapter")) == 2
        assert await gateway.list_models() == [BASE_MODEL, "law-abc"]


async def test_health_is_false_when_unreachable() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert await _client(httpx.MockTransport(handle)).health() is False
