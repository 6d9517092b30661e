"""A chat completion that survives an engine which lost its adapters.

vLLM keeps runtime-loaded LoRA adapters in memory only: an engine that restarted
answers 404 for the adapter's model name until the adapters are loaded again. The
release watcher reloads them every reconcile interval; a request that arrives
before it asks for that reload itself and tries once more. Answering and the QA
dry run both generate on a slot's adapters, so both go through here.
"""

from __future__ import annotations

from typing import Any, Protocol

from twinloop.engines.client import ChatResult, EngineClient, EngineModelNotFoundError
from twinloop.settings import Slot


class AdapterReconciler(Protocol):
    """Loads what a slot's engine should serve (twinloop.releases.ReleaseController)."""

    async def reconcile(self, slot: Slot) -> list[str]: ...


async def chat_with_adapter_retry(
    engine: EngineClient,
    body: dict[str, Any],
    *,
    slot: Slot,
    adapter: str | None,
    releases: AdapterReconciler,
) -> ChatResult:
    """`engine.chat(body)`; on a lost adapter, reconcile the slot and try once more.

    Without an adapter a missing model is not something a reload can fix, so the
    error is raised as it is; a second "not found" after the reload is raised too.
    """
    try:
        return await engine.chat(body)
    except EngineModelNotFoundError:
        if adapter is None:
            raise
        await releases.reconcile(slot)
        return await engine.chat(body)
