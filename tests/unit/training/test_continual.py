"""Continual cycles with a fake trainer: which adapter a domain grows from, and when it must not.

The real LoRA start is tests/integration/test_continual_training.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_HEADERS
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer import daemon
from twinloop.trainer.daemon import Trainer
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.protocols import ProgressCallback, TrainedAdapter, TrainRequest
from twinloop.training.replay import ReplayItem


@pytest.fixture
async def continual_trainer(
    settings: Settings, fake_engine: FakeEngine, fake_trainer: FakeAdapterTrainer, app: Any
) -> AsyncIterator[Trainer]:
    """A trainer with `trainer.continual` on, no domain replay (so an adapter learns only its
    cycle's items) and QA off."""
    continual = settings.model_copy(
        update={
            "trainer": settings.trainer.model_copy(
                update={"qa": False, "continual": True, "domain_replay_ratio": 0.0}
            )
        }
    )
    async with daemon.open_trainer(
        continual, trainer=fake_trainer, engine_transport=fake_engine.transport()
    ) as opened:
        yield opened


async def _ingest(client: httpx.AsyncClient, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/ingest", json={"items": list(items)}, headers=ADMIN_HEADERS)
    assert response.status_code == 202, response.text
    results: list[dict[str, Any]] = response.json()["items"]
    return results


async def _feedback(client: httpx.AsyncClient, feedback_id: str, correction: str) -> None:
    served = await client.post(
        "/answer", json={"question": f"Zelco {feedback_id}?", "domain": "fin", "user_id": "u1"}
    )
    assert served.status_code == 200, served.text
    (result,) = await _ingest(
        client,
        {"type": "feedback", "id": feedback_id, "answer_id": served.json()["answer_id"],
         "rating": "down", "correction": correction},
    )  # fmt: skip
    assert result["status"] == "added", result


async def _cycle(
    client: httpx.AsyncClient,
    trainer: Trainer,
    runtime: Runtime,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = {"overrides": overrides} if overrides is not None else None
    requested = await client.post("/train", json=body, headers=ADMIN_HEADERS)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    assert await trainer.cycles.claim(cycle_id)
    await trainer.runner.run(cycle_id)
    await runtime.releases.refresh()
    body: dict[str, Any] = (await client.get(f"/train/{cycle_id}", headers=ADMIN_HEADERS)).json()
    return body


async def _promoted_cycle(
    client: httpx.AsyncClient, trainer: Trainer, runtime: Runtime, feedback_id: str
) -> str:
    """A cycle on one correction whose fin adapter Active then serves; returns the adapter."""
    await _feedback(client, feedback_id, f"Zelco's {feedback_id} answer is {feedback_id}.")
    cycle = await _cycle(client, trainer, runtime)
    assert cycle["state"] == "staged", cycle
    swapped = await client.post("/swap", json={"generation": "latest"}, headers=ADMIN_HEADERS)
    assert swapped.status_code == 200, swapped.text
    await runtime.releases.refresh()
    active = runtime.releases.state.serving(runtime.releases.state.active_slot)
    assert active.adapters["fin"].id == cycle["adapters"]["fin"]
    adapter_id: str = cycle["adapters"]["fin"]
    return adapter_id


async def _view(client: httpx.AsyncClient, adapter_id: str) -> dict[str, Any]:
    lineage = await client.get(f"/adapters/{adapter_id}/lineage", headers=ADMIN_HEADERS)
    assert lineage.status_code == 200, lineage.text
    view: dict[str, Any] = lineage.json()["adapter"]
    return view


def _starts_total(trainer: Trainer, start: str, why: str) -> float:
    value = trainer.metrics.registry.get_sample_value(
        "twinloop_training_starts_total", {"start": start, "why": why}
    )
    return value or 0.0


async def test_a_continual_cycle_grows_from_actives_adapter_and_lineage_records_it(
    client: httpx.AsyncClient,
    continual_trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
) -> None:
    first = await _promoted_cycle(client, continual_trainer, runtime, "f1")
    assert fake_trainer.requests[0].grow_from is None  # Active served no fin adapter yet
    await _feedback(client, "f2", "Zelco is based in Ostrava.")

    second = await _cycle(client, continual_trainer, runtime)

    assert second["state"] == "staged", second
    assert second["starts"]["fin"]["start"] == "continual"
    assert (second["starts"]["fin"]["why"], second["starts"]["fin"]["adapter_id"]) == (
        "grown",
        first,
    )
    grow_from = fake_trainer.requests[-1].grow_from
    assert grow_from is not None
    first_view = await _view(client, first)
    assert grow_from.sha256 == first_view["sha256"]
    assert grow_from.path.name == first_view["sha256"] and grow_from.path.is_dir()
    assert fake_trainer.grown_from_checked == [grow_from.path]
    lineage = (
        await client.get(f"/adapters/{second['adapters']['fin']}/lineage", headers=ADMIN_HEADERS)
    ).json()
    assert lineage["adapter"]["grown_from_id"] == first
    assert lineage["adapter"]["parent_id"] == first
    assert lineage["grown_from"]["id"] == first
    assert lineage["adapter"]["metrics"]["start"]["start"] == "continual"
    assert _starts_total(continual_trainer, "continual", "grown") == 1
    assert _starts_total(continual_trainer, "base", "no_active_adapter") == 1


async def test_with_continual_off_every_adapter_starts_from_the_base(
    client: httpx.AsyncClient,
    trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
) -> None:
    first = await _promoted_cycle(client, trainer, runtime, "f1")
    await _feedback(client, "f2", "Zelco is based in Ostrava.")

    second = await _cycle(client, trainer, runtime)

    assert second["starts"]["fin"] == {
        "start": "base", "why": "off", "adapter_id": None, "reason": "trainer.continual is off"
    }  # fmt: skip
    assert fake_trainer.requests[-1].grow_from is None
    lineage = (
        await client.get(f"/adapters/{second['adapters']['fin']}/lineage", headers=ADMIN_HEADERS)
    ).json()
    assert (lineage["adapter"]["parent_id"], lineage["adapter"]["grown_from_id"]) == (first, None)
    assert lineage["grown_from"] is None


async def test_an_admin_may_grow_one_cycle_from_actives_adapter_or_not(
    client: httpx.AsyncClient,
    trainer: Trainer,
    continual_trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
) -> None:
    """The `continual` override decides for its cycle only (bench/learning.py compares the
    two through the API): on over a setting that is off, off over one that is on."""
    first = await _promoted_cycle(client, trainer, runtime, "f1")
    await _feedback(client, "f2", "Zelco is based in Ostrava.")

    grown = await _cycle(client, trainer, runtime, overrides={"continual": True})
    await _feedback(client, "f3", "Zelco was founded in 1999.")
    fresh = await _cycle(client, continual_trainer, runtime, overrides={"continual": False})

    assert (grown["starts"]["fin"]["start"], grown["starts"]["fin"]["adapter_id"]) == (
        "continual",
        first,
    )
    assert grown["overrides"] == {"continual": True}
    assert fresh["starts"]["fin"]["why"] == "off"
    assert [r.grow_from is not None for r in fake_trainer.requests] == [False, True, False]


async def test_a_tainted_active_adapter_is_never_grown_from(
    client: httpx.AsyncClient,
    continual_trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
) -> None:
    first = await _promoted_cycle(client, continual_trainer, runtime, "f1")
    (deleted,) = await _ingest(client, {"type": "feedback", "id": "f1", "deleted": True})
    assert deleted["tainted_adapters"] == [first]
    await runtime.releases.refresh()
    active = runtime.releases.state.serving(runtime.releases.state.active_slot)
    assert active.adapters["fin"].id == first  # Active still serves it; the cycle must not grow
    await _feedback(client, "f2", "Zelco is based in Ostrava.")

    second = await _cycle(client, continual_trainer, runtime)

    start = second["starts"]["fin"]
    assert (start["start"], start["why"], start["adapter_id"]) == ("base", "tainted", first)
    assert "tainted" in start["reason"] and "f1" in start["reason"]
    assert fake_trainer.requests[-1].grow_from is None
    view = await _view(client, second["adapters"]["fin"])
    assert view["grown_from_id"] is None
    assert _starts_total(continual_trainer, "base", "tainted") == 1


async def test_deleting_what_an_ancestor_learned_taints_the_adapters_grown_from_it(
    client: httpx.AsyncClient, continual_trainer: Trainer, runtime: Runtime, settings: Settings
) -> None:
    first = await _promoted_cycle(client, continual_trainer, runtime, "f1")
    second = await _promoted_cycle(client, continual_trainer, runtime, "f2")
    lineage = (await client.get(f"/adapters/{second}/lineage", headers=ADMIN_HEADERS)).json()
    assert [i["feedback_id"] for i in lineage["trained_on"]] == ["f2"]  # f1 is not replayed
    assert lineage["adapter"]["grown_from_id"] == first
    cache = settings.training_dir / "runs" / ".grow-from"
    assert [p.name for p in cache.iterdir()] == [(await _view(client, first))["sha256"]]
    third = await _promoted_cycle(client, continual_trainer, runtime, "f3")
    assert (await _view(client, third))["grown_from_id"] == second
    # The trainer keeps a copy of only what it grew from last.
    assert [p.name for p in cache.iterdir()] == [(await _view(client, second))["sha256"]]

    (deleted,) = await _ingest(client, {"type": "feedback", "id": "f1", "deleted": True})

    assert sorted(deleted["tainted_adapters"]) == sorted([first, second, third])
    view = await _view(client, second)
    assert view["tainted"] and f"grown from {first}" in view["tainted_reason"]
    view = await _view(client, third)
    assert f"grown from {second}, grown from {first}, trained on feedback" in view["tainted_reason"]


async def test_an_adapter_of_another_shape_or_a_changed_copy_is_not_grown_from(
    client: httpx.AsyncClient,
    continual_trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
    settings: Settings,
) -> None:
    first = await _promoted_cycle(client, continual_trainer, runtime, "f1")
    await _feedback(client, "f2", "Zelco is based in Ostrava.")
    fake_trainer.incompatible = "its LoRA (r=8) differs"

    second = await _cycle(client, continual_trainer, runtime)

    start = second["starts"]["fin"]
    assert (start["start"], start["why"], start["adapter_id"]) == ("base", "incompatible", first)
    assert "r=8" in start["reason"]
    # The stored copy changed on disk: the verified fetch refuses it.
    fake_trainer.incompatible = None
    sha256 = (await _view(client, first))["sha256"]
    stored = settings.data_dir / "adapters" / sha256 / "adapter_config.json"
    stored.write_text(stored.read_text().replace('"r": 8', '"r": 8 '))
    for copy in (settings.training_dir / "runs" / ".grow-from").glob("*"):
        (copy / "adapter_config.json").unlink()  # no verified local copy to fall back on
    await _feedback(client, "f3", "Zelco was founded in 1999.")

    third = await _cycle(client, continual_trainer, runtime)

    start = third["starts"]["fin"]
    assert (start["start"], start["why"]) == ("base", "unreadable"), start
    assert fake_trainer.requests[-1].grow_from is None


async def test_a_cycle_whose_start_is_tainted_while_it_trains_is_abandoned(
    client: httpx.AsyncClient,
    continual_trainer: Trainer,
    fake_trainer: FakeAdapterTrainer,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await _promoted_cycle(client, continual_trainer, runtime, "f1")
    await _feedback(client, "f2", "Zelco is based in Ostrava.")
    loop = asyncio.get_running_loop()
    train = fake_trainer.train

    def deleted_while_training(
        requests: Sequence[TrainRequest],
        guard: Sequence[ReplayItem],
        on_step: ProgressCallback,
        overrides: TrainingOverrides | None = None,
    ) -> dict[str, TrainedAdapter]:
        trained = train(requests, guard, on_step, overrides)
        deletion = _ingest(client, {"type": "feedback", "id": "f1", "deleted": True})
        asyncio.run_coroutine_threadsafe(deletion, loop).result(timeout=30)
        return trained

    monkeypatch.setattr(fake_trainer, "train", deleted_while_training)

    cycle = await _cycle(client, continual_trainer, runtime)

    assert fake_trainer.requests[-1].grow_from is not None
    assert cycle["state"] == "abandoned", cycle
    assert first in cycle["error"] and "tainted" in cycle["error"]
    assert cycle["adapters"] == {}
