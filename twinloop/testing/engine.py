"""A fake vLLM server behind `httpx.MockTransport`, for fast unit tests.

It answers the parts of vLLM's OpenAI API the gateway uses and records what
it was asked. Its real counterpart is exercised in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BASE_MODEL = "smollm2-135m-instruct"


def already_loaded(name: str) -> dict[str, Any]:
    """vLLM's answer (HTTP 400) to loading an adapter name it already serves, as its LoRA
    load endpoint writes it (`_check_load_lora_adapter_request`)."""
    message = (
        f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
        "in place, set 'load_inplace' to True."
    )
    return {"error": {"message": message, "type": "InvalidUserInput", "param": None, "code": 400}}


@dataclass
class FakeEngine:
    """Both slots' engines, told apart by port. `down` slots refuse connections."""

    ports: dict[int, str]
    reply: str = "Paris is the capital of France."
    down: set[str] = field(default_factory=set)
    status_override: tuple[int, dict[str, Any]] | None = None
    hang: bool = False
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    loaded_adapters: dict[str, set[str]] = field(default_factory=dict)
    # When set, non-streamed chat replies come from here: (model, last user message) -> text.
    answer_for: Callable[[str, str], str] | None = None
    # path -> event: a request to that path is recorded, then waits until the event is set.
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    # When set, an adapter loads only from a folder that holds an adapter_config.json, as
    # vLLM reads the path it is handed (404 otherwise, as vLLM answers).
    reads_lora_path: bool = False
    # When set, a streamed reply is these content pieces exactly (else `reply`, word by word).
    stream_pieces: list[str] | None = None
    stream_hangs_after: int | None = None
    """Streams stop after this many pieces, open until the gateway closes them (then the
    path is in `cancelled`): a generation still going when the client leaves."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [body for _, p, body in self.requests if p == path]

    def hold(self, path: str) -> asyncio.Event:
        """Keep requests to `path` waiting until the returned event is set."""
        self.held[path] = asyncio.Event()
        return self.held[path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        slot = self.ports[request.url.port or 80]
        if slot in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else {}
        self.requests.append((slot, request.url.path, body))
        if request.url.path in self.held:
            await self.held[request.url.path].wait()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(request.url.path)
                raise
        if self.status_override and request.url.path.startswith("/v1/chat"):
            status, payload = self.status_override
            return httpx.Response(status, json=payload)
        path = request.url.path
        loaded = self.loaded_adapters.setdefault(slot, set())
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            names = [BASE_MODEL, *sorted(loaded)]
            return httpx.Response(200, json={"data": [{"id": name} for name in names]})
        if path == "/v1/load_lora_adapter":
            if body["lora_name"] in loaded:
                return httpx.Response(400, json=already_loaded(body["lora_name"]))
            if (
                self.reads_lora_path
                and not (Path(body["lora_path"]) / "adapter_config.json").is_file()
            ):
                name, where = body["lora_name"], body["lora_path"]
                message = f"Loading lora {name} failed: No adapter found for {where}"
                return httpx.Response(404, json={"error": {"message": message}})
            loaded.add(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            if body["lora_name"] not in loaded:
                return httpx.Response(404, json={"error": {"message": "not found"}})
            loaded.discard(body["lora_name"])
            return httpx.Response(200, text="Success")
        if body.get("model") not in (None, BASE_MODEL, *loaded):
            message = f"The model `{body.get('model')}` does not exist."
            return httpx.Response(404, json={"error": {"message": message}})
        if path == "/v1/completions":
            return httpx.Response(200, json={"choices": [{"text": "!", "index": 0}]})
        if path == "/v1/chat/completions":
            if body.get("stream"):
                return httpx.Response(
                    200,
                    headers={"content-type": "text/event-stream"},
                    stream=_SSE(self._stream_events(body)),
                )
            return httpx.Response(200, json=self._completion(body))
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-engine",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._reply_for(body)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }

    def _reply_for(self, body: dict[str, Any]) -> str:
        # An adapter changes the answer, so tests can tell who served it.
        model = body.get("model")
        if self.answer_for is not None:
            users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
            return self.answer_for(str(model), str(users[-1].get("content") or "") if users else "")
        return self.reply if model == BASE_MODEL else f"{self.reply} [{model}]"

    async def _stream_events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        words = self.stream_pieces or [
            word if i == 0 else " " + word for i, word in enumerate(self.reply.split(" "))
        ]
        for i, word in enumerate(words):
            if i == self.stream_hangs_after:
                try:
                    await asyncio.Event().wait()
                finally:
                    self.cancelled.append("/v1/chat/completions")
            delta = {"content": word}
            chunk = {
                "id": "chatcmpl-engine",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": "stop" if i == len(words) - 1 else None,
                    }
                ],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 20}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


class _SSE(httpx.AsyncByteStream):
    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            yield event
