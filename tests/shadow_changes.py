"""Shadow changed by two processes at once: the gateway's ingest and the trainer's stage.

Shared by the SQLite (tests/unit/releases) and PostgreSQL (tests/integration) runs of the
same race. Each process has its own release controller on the one database; nothing is
stubbed but the engines (`FakeEngine`), the document index and the adapter trainer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from twinloop.releases.service import ReleaseController
from twinloop.releases.state import SlotSnapshot
from twinloop.testing.engine import FakeEngine
from twinloop.trainer.daemon import Trainer
from twinloop.training.schemas import CycleView

LOAD_ADAPTER = "/v1/load_lora_adapter"


@dataclass(frozen=True)
class Raced:
    cycle: CycleView
    ingested_version: int  # the law RAG version the racing ingest wrote
    shadow: SlotSnapshot  # what Shadow serves after both


async def until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait for `condition` (a guard against hanging, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def ingest(
    gateway: httpx.AsyncClient, headers: dict[str, str], *items: dict[str, Any]
) -> dict[str, Any]:
    response = await gateway.post("/ingest", json={"items": list(items)}, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["staging"] == "staged", body
    return body


async def teach_law(gateway: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """A law correction: a training cycle now has something to train a law adapter on."""
    served = await gateway.post("/answer", json={"question": "Who runs Zelco?", "domain": "law"})
    assert served.status_code == 200, served.text
    await ingest(
        gateway,
        headers,
        {"type": "feedback", "id": "f1", "answer_id": served.json()["answer_id"],
         "rating": "down", "correction": "Zelco is run by Mara Quill."},
    )  # fmt: skip


async def ingest_law_document(gateway: httpx.AsyncClient, headers: dict[str, str]) -> int:
    body = await ingest(
        gateway, headers, {"type": "document", "id": "d1", "domain": "law", "text": "Courts."}
    )
    version: int = body["items"][0]["rag_version"]
    return version


async def ingest_while_the_trainer_stages(
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    trainer: Trainer,
    engines: FakeEngine,
    releases: ReleaseController,
    *,
    trainer_first: bool,
) -> Raced:
    """A training cycle (QA off) stages its law adapter while the gateway ingests a law
    document; `releases` is the gateway's controller.

    `trainer_first`: the cycle ends before the ingest starts, and the gateway has not seen
    its release yet (a slow poll). Otherwise the cycle is held at loading its adapter into
    Shadow's engine — past deriving its snapshot, before writing its release — while the
    ingest stages, so the trainer's write is the one that loses the race.
    """
    await teach_law(gateway, headers)
    cycle = await trainer.cycles.request(trigger="cli", actor="cli", claim=True)
    if trainer_first:
        view = await trainer.runner.run(cycle.id)
        version = await ingest_law_document(gateway, headers)
    else:
        loading = engines.hold(LOAD_ADAPTER)
        running = asyncio.create_task(trainer.runner.run(cycle.id))
        await until(lambda: engines.calls(LOAD_ADAPTER) or running.done())
        version = await ingest_law_document(gateway, headers)
        loading.set()
        view = await running
    await releases.refresh()
    state = releases.state
    return Raced(cycle=view, ingested_version=version, shadow=state.serving(state.shadow_slot))
