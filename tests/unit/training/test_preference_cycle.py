"""Preference pairs through a cycle (fake trainer): which pairs reach DPO, and where the
stage's report is recorded (the cycle's view, the adapter's lineage, the trainer's metrics)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from tests.conftest import ADMIN_HEADERS
from tests.unit.conftest import run_cycle
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer import daemon
from twinloop.trainer.daemon import Trainer


async def _served(client: httpx.AsyncClient, question: str, user: str) -> str:
    served = await client.post(
        "/answer", json={"question": question, "domain": "fin", "user_id": user}
    )
    assert served.status_code == 200, served.text
    answer_id: str = served.json()["answer_id"]
    return answer_id


async def _feedback(client: httpx.AsyncClient, *items: dict[str, Any]) -> None:
    response = await client.post("/ingest", json={"items": list(items)}, headers=ADMIN_HEADERS)
    assert response.status_code == 202, response.text
    assert {i["status"] for i in response.json()["items"]} == {"added"}, response.json()


async def _four_corrections_and_an_upvote(client: httpx.AsyncClient) -> None:
    items = []
    for i in range(4):
        answer_id = await _served(client, f"Who audits Zelco branch {i}?", f"u{i}")
        items.append({"type": "feedback", "id": f"fb-{i}", "answer_id": answer_id,
                      "rating": "down", "correction": f"Brask & Co audit branch {i}."})  # fmt: skip
    liked = await _served(client, "Where is Zelco based?", "u9")
    items.append({"type": "feedback", "id": "fb-up", "answer_id": liked, "rating": "up"})
    await _feedback(client, *items)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_corrections_become_pairs_and_the_dpo_report_is_recorded_with_the_cycle(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    fake_engine: FakeEngine,
) -> None:
    await _four_corrections_and_an_upvote(client)

    cycle = await run_cycle(client, admin_headers, trainer)

    assert cycle["state"] == "staged", cycle
    (request,) = fake_trainer.requests
    # The four corrections are pairs (the upvote is not); a quarter is held out.
    assert (len(request.pairs), len(request.heldout_pairs)) == (3, 1)
    assert {p.rejected for p in request.pairs} == {fake_engine.reply}
    assert {p.chosen for p in [*request.pairs, *request.heldout_pairs]} == {
        f"Brask & Co audit branch {i}." for i in range(4)
    }
    report = cycle["preference"]["fin"]
    assert (report["pairs"], report["heldout_pairs"]) == (3, 1)
    lineage = (
        await client.get(f"/adapters/{cycle['adapters']['fin']}/lineage", headers=admin_headers)
    ).json()
    assert lineage["adapter"]["metrics"]["preference"] == report
    assert lineage["cycle"]["preference"] == {"fin": report}
    registry = trainer.metrics.registry
    assert _sample(registry, "twinloop_training_preference_pairs_total", split="trained") == 3
    assert _sample(registry, "twinloop_training_preference_pairs_total", split="heldout") == 1
    assert _sample(registry, "twinloop_training_preference_margin", domain="fin") == 0.25
    assert (
        _sample(registry, "twinloop_training_preference_accuracy", domain="fin", stage="dpo") == 1.0
    )


async def test_an_admin_may_turn_dpo_off_for_one_cycle(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
) -> None:
    """`bench/learning.py` compares SFT alone with SFT + DPO through the API this way."""
    await _four_corrections_and_an_upvote(client)

    cycle = await run_cycle(client, admin_headers, trainer, overrides={"preference": False})

    assert cycle["state"] == "staged", cycle
    assert cycle["overrides"] == {"preference": False}
    assert [(len(r.pairs), len(r.heldout_pairs)) for r in fake_trainer.requests] == [(0, 0)]
    assert cycle["preference"] == {}


async def test_no_pairs_no_dpo_and_none_when_preference_training_is_off(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    settings: Settings,
    fake_engine: FakeEngine,
    runtime: Runtime,
) -> None:
    example = {"type": "example", "id": "e1", "domain": "fin",
               "question": "What is a ledger?", "answer": "A book of accounts."}  # fmt: skip
    await _feedback(client, example)
    await _four_corrections_and_an_upvote(client)
    fake = FakeAdapterTrainer()
    off = settings.model_copy(
        update={"trainer": settings.trainer.model_copy(update={"qa": False, "preference": False})}
    )
    async with daemon.open_trainer(
        off, trainer=fake, engine_transport=fake_engine.transport()
    ) as trainer:
        cycle = await run_cycle(client, admin_headers, trainer)

    assert cycle["state"] == "staged", cycle
    assert [(len(r.pairs), len(r.heldout_pairs)) for r in fake.requests] == [(0, 0)]
    assert cycle["preference"] == {}
