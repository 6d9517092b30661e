"""The gateway with the real embedding model (the `auto` backend, ONNX): `model: auto`
questions are routed on one embedding each, encoded once and cached, concurrent ones in
shared batches. The engine is the fake one: only routing is under test here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge

pytestmark = pytest.mark.integration

LAW = "Can my landlord keep my whole deposit for a scuffed wall?"
MED = "I have had a fever and a sore throat for three days, should I see a doctor?"


@pytest.fixture
async def gateway(
    settings: Settings, fake_engine: FakeEngine, fake_knowledge: FakeKnowledge
) -> AsyncIterator[FastAPI]:
    app = create_app(settings, engine_transport=fake_engine.transport(), knowledge=fake_knowledge)
    async with app.router.lifespan_context(app):
        yield app


def _sample(runtime: Runtime, name: str, labels: dict[str, str]) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_auto_routes_on_one_cached_batched_embedding_per_question(gateway: FastAPI) -> None:
    runtime: Runtime = gateway.state.runtime
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

        async def ask(question: str) -> dict[str, object]:
            response = await client.post("/answer", json={"question": question, "use_rag": False})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        together = await asyncio.gather(*(ask(q) for q in (LAW, MED, LAW + " Really?", MED)))
        assert [a["domain"] for a in together] == ["law", "med", "law", "med"]
        again = await ask(LAW)

    assert again["domain"] == "law" and again["cached"] is True
    hits = _sample(runtime, "twinloop_embedding_cache_total", {"outcome": "hit"})
    misses = _sample(runtime, "twinloop_embedding_cache_total", {"outcome": "miss"})
    # Three distinct questions encoded (MED twice at once shares one encoding); LAW again hits.
    assert (misses, hits) == (4, 1)
    batches = _sample(runtime, "twinloop_embedding_batch_size_count", {})
    encoded = _sample(runtime, "twinloop_embedding_batch_size_sum", {})
    assert encoded == 3 and batches <= 3
