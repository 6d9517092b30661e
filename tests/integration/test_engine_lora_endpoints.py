"""The engine client against vLLM's own LoRA endpoints (the installed vllm's routes and
handler), with only the engine core under them stubbed: no model is loaded.

What `FakeEngine` answers to a second load of one adapter name is what vLLM answers, and
the client takes it as loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from twinloop.engines.client import EngineClient
from twinloop.testing.engine import already_loaded

pytestmark = [
    pytest.mark.integration,
    # Importing vllm imports torch, whose import-time code warns of its own deprecations.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
async def vllm_routes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """vLLM's /v1/models and LoRA load/unload routes in a FastAPI app, over ASGI."""
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "1")
    from fastapi import FastAPI
    from vllm.entrypoints.openai.models import api_router as models_routes
    from vllm.entrypoints.openai.models.protocol import BaseModelPath
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.serve.lora.api_router import attach_router

    async def add_lora(request: Any) -> bool:
        await asyncio.sleep(0.01)  # the engine core's work: the other load arrives meanwhile
        return True

    core = SimpleNamespace(
        model_config=SimpleNamespace(max_model_len=2048),
        renderer=None,
        input_processor=None,
        add_lora=add_lora,
    )
    app = FastAPI()
    attach_router(app)
    app.include_router(models_routes.router)
    app.state.openai_serving_models = OpenAIServingModels(
        core,  # type: ignore[arg-type]
        [BaseModelPath(name="base", model_path="base")],
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield http


async def test_vllm_refuses_a_second_load_as_the_fake_engine_does(
    vllm_routes: httpx.AsyncClient,
) -> None:
    body = {"lora_name": "law-abc", "lora_path": "/adapters/abc"}
    first = await vllm_routes.post("http://engine/v1/load_lora_adapter", json=body)
    second = await vllm_routes.post("http://engine/v1/load_lora_adapter", json=body)

    assert first.status_code == 200, first.text
    assert (second.status_code, second.json()) == (400, already_loaded("law-abc"))


async def test_two_clients_loading_one_adapter_at_once_both_succeed(
    vllm_routes: httpx.AsyncClient,
) -> None:
    gateway, trainer = (
        EngineClient(name="blue", base_url="http://engine", http=vllm_routes) for _ in range(2)
    )

    await asyncio.gather(
        gateway.load_adapter("law-abc", "/adapters/abc"),
        trainer.load_adapter("law-abc", "/adapters/abc"),
    )

    assert await gateway.list_models() == ["base", "law-abc"]
