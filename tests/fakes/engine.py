"""A fake vLLM server behind `httpx.MockTransport`, for fast unit tests.

It answers the parts of vLLM's OpenAI API the gateway uses and records what
it was asked. Its real counterpart is exercised in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


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

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [body for _, p, body in self.requests if p == path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        slot = self.ports[request.url.port or 80]
        if slot in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else {}
        self.requests.append((slot, request.url.path, body))
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
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "smollm2-135m-instruct"}]})
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
                    "message": {"role": "assistant", "content": self.reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }

    async def _stream_events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
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
