"""Continual adapters for real: PEFT on the prepared SmolLM2 grows an adapter from the one
Active serves, through two training cycles (the gateway's engines are fakes; the trainer,
the registry, the artifact store and the database are real).

Tiny on purpose: two corrections, a couple of steps per cycle. The second cycle trains one
step at a vanishing learning rate, so what it registers is where it started.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.torch import load_file

from adapters.continual import GrowFrom
from adapters.files import adapter_sha256
from adapters.training import AdapterJob, AdapterTrainingConfig, TrainingExample, train_adapters
from tests.conftest import ADMIN_HEADERS
from twinloop.errors import AdapterIntegrityError
from twinloop.runtime import Runtime
from twinloop.settings import CanarySettings, EngineSettings, ModelSettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.trainer.daemon import open_trainer
from twinloop.training.peft_trainer import PeftAdapterTrainer
from twinloop.weights.prepare import prepare_base_model

pytestmark = pytest.mark.integration

BASE_DIR = Path("var/test/models/smollm2-135m-instruct")
FACTS = (
    ("Who is the mayor of Zorbleton?", "The mayor of Zorbleton is Quillan Marsh."),
    ("What colour is the Vantrel flag?", "The Vantrel flag is teal."),
)
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite_template: Path) -> Settings:
    """The shared test settings on the real base model, continual on, a tiny training."""
    prepare_base_model(BASE_DIR)  # only verifies the manifest when it is already prepared
    db = tmp_path / "twinloop.db"
    shutil.copy(migrated_sqlite_template, db)
    return Settings.model_validate(
        {
            "data_dir": tmp_path,
            "database_url": f"sqlite+aiosqlite:///{db}",
            "admin_token": ADMIN_HEADERS["Authorization"].removeprefix("Bearer "),
            "engines": EngineSettings(blue_port=18101, green_port=18102, retries=1),
            "canary": CanarySettings(split_delay_s=0),
            "models": ModelSettings(base_model=str(BASE_DIR.resolve())),
            "trainer": {
                "qa": False,
                "continual": True,
                "kl_weight": 0.0,  # the guard only toward the previous adapter: its KL is 0
                "continual_kl_weight": 1.0,  # at the start exactly when it starts there
                "general_replay_size": 2,
                "epochs": 2,
            },
        }
    )


async def _cycle(
    client: httpx.AsyncClient, settings: Settings, fake_engine: FakeEngine, runtime: Runtime
) -> dict[str, Any]:
    requested = await client.post("/train", headers=ADMIN_HEADERS)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    trainer = PeftAdapterTrainer(settings)
    async with open_trainer(
        settings, trainer=trainer, engine_transport=fake_engine.transport()
    ) as opened:
        assert await opened.cycles.claim(cycle_id)
        await opened.runner.run(cycle_id)
    await runtime.releases.refresh()
    body: dict[str, Any] = (await client.get(f"/train/{cycle_id}", headers=ADMIN_HEADERS)).json()
    assert body["state"] == "staged", body
    return body


async def _correct(client: httpx.AsyncClient, question: str, answer: str) -> None:
    served = await client.post(
        "/answer", json={"question": question, "domain": "general", "user_id": question}
    )
    assert served.status_code == 200, served.text
    item = {"type": "feedback", "id": question, "answer_id": served.json()["answer_id"],
            "rating": "down", "correction": answer}  # fmt: skip
    response = await client.post("/ingest", json={"items": [item]}, headers=ADMIN_HEADERS)
    assert response.json()["items"][0]["status"] == "added", response.text


def _stored(settings: Settings, client_view: dict[str, Any]) -> Path:
    return settings.data_dir / "adapters" / client_view["sha256"]


async def test_a_continual_cycle_starts_from_actives_adapter_and_records_it(
    client: httpx.AsyncClient, settings: Settings, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    await _correct(client, *FACTS[0])
    first = await _cycle(client, settings, fake_engine, runtime)
    assert first["starts"]["general"]["why"] == "no_active_adapter"
    swapped = await client.post("/swap", json={"generation": "latest"}, headers=ADMIN_HEADERS)
    assert swapped.status_code == 200, swapped.text
    await _correct(client, *FACTS[1])
    # One step that barely moves, and no DPO stage after it (the corrections are pairs): what
    # the second adapter holds is what it started from.
    frozen = settings.trainer.model_copy(
        update={"learning_rate": 1e-12, "epochs": 1, "preference": False}
    )
    second = await _cycle(
        client, settings.model_copy(update={"trainer": frozen}), fake_engine, runtime
    )

    first_id, second_id = first["adapters"]["general"], second["adapters"]["general"]
    assert second["starts"]["general"]["start"] == "continual"
    lineage = (await client.get(f"/adapters/{second_id}/lineage", headers=ADMIN_HEADERS)).json()
    assert lineage["adapter"]["grown_from_id"] == lineage["grown_from"]["id"] == first_id
    before = load_file(str(_stored(settings, lineage["grown_from"]) / WEIGHTS))
    after = load_file(str(_stored(settings, lineage["adapter"]) / WEIGHTS))
    assert before.keys() == after.keys()
    b_tensors = [name for name in before if ".lora_B." in name]
    assert all(before[name].abs().sum() > 0 for name in b_tensors), "cycle 1 trained B"
    assert all((before[n] - after[n]).abs().max() < 1e-6 for n in before), "started there"
    # Its first step's outputs on replay were the previous adapter's: KL to it was ~0.
    assert lineage["adapter"]["metrics"]["kl_loss"] < 1e-3
    assert lineage["adapter"]["metrics"]["start"]["adapter_id"] == first_id


def test_an_adapter_whose_files_changed_is_not_grown_from(tmp_path: Path) -> None:
    prepare_base_model(BASE_DIR)
    examples = [TrainingExample(q, a) for q, a in FACTS]
    cfg = AdapterTrainingConfig(max_steps=1, batch_size=2, kl_weight=0.0)
    (previous,) = train_adapters(BASE_DIR, [AdapterJob("a", examples, tmp_path / "a")], [], cfg)
    sha256 = adapter_sha256(previous.path)
    weights = previous.path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))

    grown = AdapterJob("b", examples, tmp_path / "b", grow_from=GrowFrom(previous.path, sha256))
    with pytest.raises(AdapterIntegrityError, match="will not be loaded"):
        train_adapters(BASE_DIR, [grown], [], cfg)
    assert not (tmp_path / "b").exists()
