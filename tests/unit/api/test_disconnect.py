from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI
from starlette.types import Message

from twinloop.testing.engine import FakeEngine


async def test_client_leaving_cancels_the_engine_request(
    app: FastAPI, fake_engine: FakeEngine
) -> None:
    fake_engine.hang = True
    body = json.dumps({"question": "a long one"}).encode()
    sent: list[Message] = []
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.2)  # the client gives up while the engine is still generating
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/answer", "raw_path": b"/answer", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "server": ("gateway", 80), "state": {},
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), timeout=5)

    assert fake_engine.cancelled == ["/v1/chat/completions"]
    assert sent[0]["status"] == 499
    metrics = app.state.runtime.metrics.render().decode()
    assert 'twinloop_client_disconnects_total{route="answer"} 1.0' in metrics
