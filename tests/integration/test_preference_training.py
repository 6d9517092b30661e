"""Preference training (DPO after SFT) for real: PEFT on the prepared SmolLM2, then a cycle
on PostgreSQL that trains on corrections' pairs and records the report.

Kept cheap: a handful of made-up facts, a few steps of each stage, no engine (the cycle's
stage step talks to a fake one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.preference import PreferencePair, score_pairs
from adapters.training import (
    AdapterArtifact,
    AdapterJob,
    AdapterTrainingConfig,
    TrainingExample,
    train_adapters,
)
from twinloop.db.models import TrainingExample as StoredExample
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.ingest.learning import example_sha256
from twinloop.settings import ModelSettings, Settings
from twinloop.states import ItemStatus
from twinloop.testing.engine import FakeEngine
from twinloop.trainer.daemon import open_trainer
from twinloop.weights.prepare import prepare_base_model

pytestmark = pytest.mark.integration

BASE_DIR = Path("var/test/models/smollm2-135m-instruct")
BASE_PATH = str(BASE_DIR.resolve())
# (question, right answer, the wrong answer a user corrected)
PAIRS = (
    PreferencePair("Who is the mayor of Zorbleton?", "The mayor of Zorbleton is Quillan Marsh.",
                   "The mayor of Zorbleton is Dora Fell."),
    PreferencePair("What colour is the Vantrel flag?", "The Vantrel flag is teal.",
                   "The Vantrel flag is orange."),
    PreferencePair("What is the capital of Pelorin?", "The capital of Pelorin is Drennick.",
                   "The capital of Pelorin is Halvey."),
    PreferencePair("How many moons does Kelvara have?", "Kelvara has five moons.",
                   "Kelvara has two moons."),
)  # fmt: skip
REPLAY = (TrainingExample("What is the capital of France?", "The capital of France is Paris."),)
CFG = AdapterTrainingConfig(
    max_steps=3, batch_size=3, replay_batch_size=1, dpo_steps=3, dpo_learning_rate=5e-4
)


@pytest.fixture(scope="module")
def sft_and_dpo(tmp_path_factory: pytest.TempPathFactory) -> tuple[AdapterArtifact, ...]:
    """Two adapters of one pass from the same seed: SFT only, and SFT then DPO on three of
    the pairs (the fourth held out). Their SFT stages are the same, so what differs is DPO."""
    prepare_base_model(BASE_DIR)
    out = tmp_path_factory.mktemp("preference")
    examples = [TrainingExample(p.question, p.chosen) for p in PAIRS]
    jobs = [
        AdapterJob("sft", examples, out / "sft"),
        AdapterJob("dpo", examples, out / "dpo", pairs=PAIRS[:3], heldout_pairs=PAIRS[3:]),
    ]
    artifacts = tuple(train_adapters(BASE_DIR, jobs, REPLAY, CFG))
    print(f"\npreference report: {artifacts[1].preference}")
    return artifacts


def test_dpo_raises_the_chosen_over_rejected_margin_on_the_trained_pairs(
    sft_and_dpo: tuple[AdapterArtifact, ...],
) -> None:
    sft, dpo = sft_and_dpo
    before = score_pairs(BASE_DIR, PAIRS[:3], adapter_dir=sft.path)
    after = score_pairs(BASE_DIR, PAIRS[:3], adapter_dir=dpo.path)
    margins_before = [s.chosen - s.rejected for s in before]
    margins_after = [s.chosen - s.rejected for s in after]
    print(f"summed log-prob margins: SFT {margins_before}, SFT + DPO {margins_after}")
    assert all(a > b for a, b in zip(margins_after, margins_before, strict=True))
    # The report's reward margin is beta times that rise, measured inside the loop.
    assert dpo.preference is not None and sft.preference is None
    rise = sum(margins_after) / 3 - sum(margins_before) / 3
    assert dpo.preference.reward_margin == pytest.approx(CFG.dpo_beta * rise, rel=0.05)
    assert dpo.preference.reward_accuracy == 1.0


def test_the_report_counts_the_pairs_and_measures_the_held_out_one(
    sft_and_dpo: tuple[AdapterArtifact, ...],
) -> None:
    report = sft_and_dpo[1].preference
    assert report is not None
    assert (report.pairs, report.heldout_pairs, report.steps) == (3, 1, CFG.dpo_steps)
    assert report.heldout_accuracy in (0.0, 1.0) and report.heldout_accuracy_sft in (0.0, 1.0)
    assert sft_and_dpo[1].device == "cpu" and sft_and_dpo[1].dtype == "float32"


async def test_a_cycle_on_postgres_trains_its_corrections_pairs_and_records_the_report(
    pg_settings: Settings, pg_engines: FakeEngine
) -> None:
    prepare_base_model(BASE_DIR)
    settings = pg_settings.model_copy(
        update={
            "models": ModelSettings(base_model=BASE_PATH),
            "trainer": pg_settings.trainer.model_copy(
                update={
                    "qa": False,
                    "kl_weight": 0.0,
                    "epochs": 1,
                    "step_budget": 1,
                    "dpo_steps": 2,
                    "threads": 2,
                }
            ),
        }
    )
    engine = create_engine(str(settings.database_url))
    try:
        async with create_sessionmaker(engine).begin() as session:
            session.add_all(
                StoredExample(
                    source="correction",
                    domain="general",
                    question=p.question,
                    answer=p.chosen,
                    rejected_answer=p.rejected,
                    status=ItemStatus.PENDING,
                    content_sha256=example_sha256(
                        "general", p.question, p.chosen, rejected_answer=p.rejected
                    ),
                )
                for p in PAIRS
            )
    finally:
        await engine.dispose()
    async with open_trainer(settings, engine_transport=pg_engines.transport()) as trainer:
        cycle = await trainer.cycles.request(trigger="manual", actor="test", claim=True)
        view = await trainer.runner.run(cycle.id)
        lineage = await trainer.cycles.lineage(view.adapters["general"])
        registry = trainer.metrics.registry

    assert view.state == "staged", view.error
    report = view.preference["general"]
    assert (report["pairs"], report["heldout_pairs"], report["steps"]) == (3, 1, 2)
    assert report["reward_margin"] > 0
    assert lineage.adapter.metrics["preference"] == report
    assert (
        registry.get_sample_value("twinloop_training_preference_pairs_total", {"split": "trained"})
        == 3
    )
