"""The stub engines' app: each port is its slot's `FakeEngine`, and a held path waits until
it is released (what the kill -9 tests rely on to stop a trainer at a known moment)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from twinloop.testing.engine import BASE_MODEL, FakeEngine
from twinloop.testing.stub_engine import create_stub_app

BLUE, GREEN = 18301, 18302
CHAT = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(ports={BLUE: "blue", GREEN: "green"})


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_stub_app(engine))
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


async def test_each_port_is_its_slot_and_keeps_its_adapters(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    loaded = await http.post(
        f"http://127.0.0.1:{GREEN}/v1/load_lora_adapter",
        json={"lora_name": "law-1", "lora_path": "/x"},
    )
    assert loaded.status_code == 200
    green = await http.get(f"http://127.0.0.1:{GREEN}/v1/models")
    blue = await http.get(f"http://127.0.0.1:{BLUE}/v1/models")

    assert [m["id"] for m in green.json()["data"]] == [BASE_MODEL, "law-1"]
    assert [m["id"] for m in blue.json()["data"]] == [BASE_MODEL]
    listed = await http.get(f"http://127.0.0.1:{BLUE}/stub/requests")
    assert listed.json() == [
        ["green", "/v1/load_lora_adapter"], ["green", "/v1/models"], ["blue", "/v1/models"]
    ]  # fmt: skip


async def test_answers_plain_and_streamed(http: httpx.AsyncClient) -> None:
    plain = await http.post(f"http://127.0.0.1:{BLUE}/v1/chat/completions", json=CHAT)
    streamed = await http.post(
        f"http://127.0.0.1:{BLUE}/v1/chat/completions", json={**CHAT, "stream": True}
    )

    assert plain.json()["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.count("data: ") == 7 and streamed.text.endswith("data: [DONE]\n\n")


async def test_a_held_path_waits_until_released(http: httpx.AsyncClient) -> None:
    base = f"http://127.0.0.1:{BLUE}"
    await http.post(f"{base}/stub/hold", json={"path": "/v1/chat/completions"})
    waiting = asyncio.create_task(http.post(f"{base}/v1/chat/completions", json=CHAT))
    await asyncio.sleep(0.05)
    models = await http.get(f"{base}/v1/models")  # other paths pass

    assert models.status_code == 200 and not waiting.done()
    seen = (await http.get(f"{base}/stub/requests")).json()
    assert ["blue", "/v1/chat/completions"] in seen  # recorded while it waits

    await http.post(f"{base}/stub/release", json={"path": "/v1/chat/completions"})
    assert (await waiting).status_code == 200
    again = await http.post(f"{base}/v1/chat/completions", json=CHAT)
    assert again.status_code == 200
