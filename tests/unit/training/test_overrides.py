"""An admin's per-cycle training override: validated at the door, recorded, used once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from adapters.training import AdapterTrainingConfig
from twinloop.db.models import AuditEntry
from twinloop.runtime import Runtime
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer.daemon import Trainer
from twinloop.training.overrides import TrainingOverrides, rounds_for


async def _teach(client: httpx.AsyncClient, admin: dict[str, str], n: int) -> None:
    items = [
        {"type": "example", "id": f"ex-{n}-{i}", "domain": "fin",
         "question": f"What is Zelco's ticker number {n}{i}?", "answer": f"ZEL{n}{i}."}
        for i in range(2)
    ]  # fmt: skip
    response = await client.post("/ingest", json={"items": items}, headers=admin)
    assert response.status_code == 202, response.text


async def _run(
    client: httpx.AsyncClient, admin: dict[str, str], trainer: Trainer, body: Any
) -> dict[str, Any]:
    requested = await client.post("/train", headers=admin, json=body)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    assert await trainer.cycles.claim(cycle_id)
    await trainer.runner.run(cycle_id)
    cycle: dict[str, Any] = (await client.get(f"/train/{cycle_id}", headers=admin)).json()
    return cycle


async def test_overrides_train_that_cycle_only_and_are_audited(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
) -> None:
    await _teach(client, admin_headers, 1)
    body = {"overrides": {"learning_rate": 0.02, "kl_weight": 0}, "reason": "demo: over-train"}
    cycle = await _run(client, admin_headers, trainer, body)
    assert cycle["state"] == "staged", cycle
    assert cycle["overrides"] == {"learning_rate": 0.02, "kl_weight": 0.0}
    assert fake_trainer.overrides == [TrainingOverrides(learning_rate=0.02, kl_weight=0)]
    # Without the guard the base model's replay answers are not computed at all.
    assert fake_trainer.guards == [[]]
    assert fake_trainer.extra_prompts == []
    async with runtime.sessionmaker.begin() as session:
        audit = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "train.overrides"))
        ).one()
    assert audit.target == cycle["id"] and audit.reason == "demo: over-train"
    assert audit.details == {"overrides": {"learning_rate": 0.02, "kl_weight": 0.0}}
    overridden = trainer.metrics.overridden.labels("kl_weight")._value.get()
    assert overridden == 1

    await _teach(client, admin_headers, 2)
    plain = await _run(client, admin_headers, trainer, None)
    assert plain["overrides"] == {}
    assert fake_trainer.overrides[-1] is None
    assert fake_trainer.guards[-1], "the next cycle trains with its guard again"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"learning_rate": 3}, "learning_rate"),  # 3 where 3e-3 was meant
        ({"learning_rate": 0}, "learning_rate"),
        ({"kl_weight": -1}, "kl_weight"),
        ({"step_budget": 1_000_000}, "step_budget"),
        ({"epochs": 0}, "epochs"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"rank": 64}, "rank"),  # not overridable: the engines' max LoRA rank bounds it
    ],
)
async def test_out_of_bounds_or_unknown_overrides_are_refused_and_queue_nothing(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = await client.post("/train", headers=admin_headers, json={"overrides": overrides})
    assert response.status_code == 422, response.text
    assert field in response.text
    assert (await client.get("/train", headers=admin_headers)).json() == []


async def test_only_an_admin_may_override(client: httpx.AsyncClient) -> None:
    response = await client.post("/train", json={"overrides": {"learning_rate": 0.01}})
    assert response.status_code == 401


def test_overrides_replace_only_what_they_set() -> None:
    base = AdapterTrainingConfig(learning_rate=1e-3, kl_weight=10.0, epochs=8, step_budget=120)
    changed = TrainingOverrides(learning_rate=0.01, kl_weight=0, max_rounds=1).apply(base)
    assert (changed.learning_rate, changed.kl_weight) == (0.01, 0.0)
    assert (changed.epochs, changed.step_budget, changed.rank) == (8, 120, base.rank)
    with pytest.raises(ValidationError):
        TrainingOverrides(learning_rate=0.5)


def test_an_override_may_spend_fewer_qa_rounds_never_more() -> None:
    assert rounds_for({}, 3) == 3
    assert rounds_for({"max_rounds": 1}, 3) == 1
    assert rounds_for({"max_rounds": 5}, 3) == 3
