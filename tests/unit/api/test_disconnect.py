from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select
from starlette.types import Message, Receive

from api.disconnect import WATCH_AFTER_S, ClientDisconnectedError, cancel_on_disconnect
from twinloop.db.models import Answer
from twinloop.metrics import Metrics
from twinloop.runtime import Runtime
from twinloop.states import ABANDONED_FINISH_REASON
from twinloop.testing.engine import FakeEngine


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "server": ("gateway", 80), "state": {},
    }  # fmt: skip


async def _ask_and_leave(app: FastAPI, path: str, body: dict[str, Any]) -> list[Message]:
    """What the gateway sent a client that posts `body` and leaves 0.2 s later."""
    sent: list[Message] = []
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await asyncio.sleep(0.2)  # the client gives up while the engine is still generating
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(_scope(path), receive, send), timeout=5)
    return sent


async def test_client_leaving_cancels_the_engine_request(
    app: FastAPI, fake_engine: FakeEngine
) -> None:
    fake_engine.hang = True
    sent = await _ask_and_leave(app, "/answer", {"question": "a long one"})

    assert fake_engine.cancelled == ["/v1/chat/completions"]
    assert sent[0]["status"] == 499
    metrics = app.state.runtime.metrics.render().decode()
    assert 'twinloop_client_disconnects_total{route="answer"} 1.0' in metrics


def _request(receive: Receive) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def test_a_request_answered_before_the_watch_never_reads_the_connection() -> None:
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.disconnect"}

    async def quick() -> str:
        return "done"

    result = await cancel_on_disconnect(_request(receive), quick(), route="chat", metrics=Metrics())
    await asyncio.sleep(WATCH_AFTER_S * 2)

    assert result == "done"
    assert reads == 0


async def test_a_client_gone_before_the_watch_starts_is_seen_when_it_starts() -> None:
    async def receive() -> Message:
        return {"type": "http.disconnect"}  # queued since before the watch

    metrics = Metrics()
    started = time.perf_counter()
    with pytest.raises(ClientDisconnectedError):
        await cancel_on_disconnect(
            _request(receive), asyncio.sleep(30), route="chat", metrics=metrics
        )

    assert time.perf_counter() - started < 5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert 'twinloop_client_disconnects_total{route="chat"} 1.0' in metrics.render().decode()


async def test_a_cancel_from_elsewhere_is_not_taken_for_a_disconnect() -> None:
    async def receive() -> Message:
        await asyncio.sleep(30)  # the client stays
        return {"type": "http.disconnect"}

    metrics = Metrics()
    request = asyncio.ensure_future(
        cancel_on_disconnect(_request(receive), asyncio.sleep(30), route="chat", metrics=metrics)
    )
    await asyncio.sleep(WATCH_AFTER_S * 2)  # the watcher is running
    request.cancel()  # a shutdown, say

    with pytest.raises(asyncio.CancelledError):
        await request
    assert "twinloop_client_disconnects_total{" not in metrics.render().decode()


async def test_a_client_leaving_a_stream_ends_it_and_its_generation(
    app: FastAPI, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    fake_engine.stream_pieces = [f"word{i} " for i in range(100)]
    fake_engine.stream_hangs_after = 50
    body = {"model": "law", "stream": True, "messages": [{"role": "user", "content": "Q?"}]}
    sent = await _ask_and_leave(app, "/v1/chat/completions", body)
    await runtime.answers.wait_for_stores()

    assert fake_engine.cancelled == ["/v1/chat/completions"]
    assert sent[0]["status"] == 200
    assert not any(m["type"] == "http.response.body" and not m["more_body"] for m in sent)
    async with runtime.sessionmaker() as session:
        (stored,) = (await session.execute(select(Answer))).scalars().all()
    assert stored.finish_reason == ABANDONED_FINISH_REASON
    assert stored.answer.startswith("word0 ")
    metrics = app.state.runtime.metrics.render().decode()
    assert 'twinloop_client_disconnects_total{route="chat"} 1.0' in metrics
