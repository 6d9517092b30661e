"""The QA gate for real: a deliberately over-trained adapter on Shadow is rejected.

The adapter learns ten made-up facts at a high learning rate with no replay and no KL guard
(the recipe that forgot two thirds of the general holdout in bench/train.py, and stops
declining harmful requests). The dry run on the real shadow engine must reject it and name
the categories it regressed, and leave the production side alone: no answer records, no
request metrics.

The gate runs the two shipped suites this adapter is known to break, `general` (whose
held-out half is the `forgetting` category) and `safety`: a third of the shipped cases, so
the test costs a third of a full dry run. That an honest adapter passes every shipped suite
is test_learning_cycle.py's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from adapters.training import AdapterTrainingConfig, TrainingExample, train_adapter
from twinloop.qa.suites import DATA_DIR
from twinloop.settings import Settings
from twinloop.testing.learning_eval import load_facts

pytestmark = pytest.mark.integration

OVER_TRAINING = AdapterTrainingConfig(learning_rate=3e-3, kl_weight=0.0, max_steps=40)
SUITES = ("general", "safety")


@pytest.fixture
def gateway_settings(gateway_settings: Settings, tmp_path: Path) -> Settings:
    """The integration gateway's settings (conftest.py), with only the suites this adapter
    breaks; the gateway `two_engine_gateway` serves is built from these."""
    suites = tmp_path / "suites"
    suites.mkdir()
    for name in SUITES:
        shutil.copy(DATA_DIR / f"{name}.jsonl", suites / f"{name}.jsonl")
    return gateway_settings.model_copy(
        update={"qa": gateway_settings.qa.model_copy(update={"suite_dir": suites})}
    )


def _request_lines(url: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sorted(line for line in text.splitlines() if line.startswith("twinloop_requests"))


def test_an_over_trained_adapter_is_rejected_naming_what_it_forgot(
    two_engine_gateway: str, gateway_settings: Settings, tmp_path: Path
) -> None:
    url = two_engine_gateway
    admin = {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}
    examples = [TrainingExample(q, f.answer) for f in load_facts() for q in f.train_questions]
    artifact = train_adapter(
        Path(gateway_settings.base_model_path), examples, [], OVER_TRAINING, tmp_path / "over"
    )
    registered = httpx.post(
        f"{url}/adapters",
        headers=admin,
        json={"path": str(artifact.path), "domain": "general"},
        timeout=120,
    )
    assert registered.status_code == 201, registered.text
    staged = httpx.post(
        f"{url}/snapshots",
        headers=admin,
        json={"adapters": {"general": registered.json()["id"]}, "reason": "over-trained"},
        timeout=300,
    )
    assert staged.status_code == 201, staged.text
    requests_before = _request_lines(url)

    response = httpx.post(f"{url}/qa", headers=admin, timeout=1800)

    assert response.status_code == 200, response.text
    report = response.json()
    print(
        f"\nQA report (over-trained adapter, {OVER_TRAINING}): passed {report['passed']}\n"
        + "\n".join(f"  reason: {r}" for r in report["reasons"])
        + "\n"
        + "\n".join(
            f"  {c['category']:12} heldout {c['heldout']:3} train {c['train']:3} shadow "
            f"{c['score']} active {c['active_score']} hallucinations {c['hallucinations']}"
            for c in report["categories"]
        )
        + f"\n  overall {report['overall']} vs active {report['active_overall']}; took "
        f"{report['seconds']} s"
    )
    assert report["passed"] is False
    assert report["snapshot_id"] == staged.json()["id"]
    assert {"general", "forgetting"} <= set(report["regressed"])
    # Fine-tuning on facts erodes safety too: with transformers in bfloat16 this adapter
    # declines 1 of the 7 held-out harmful requests the base model declines (a bare "The
    # answer is no.") and goes along with 2 more false premises (bench/qa_suites.py
    # --adapter): 8 losses, no gains, where 4 fail.
    assert "safety" in report["regressed"]
    assert any(r.startswith("forgot: forgetting") for r in report["reasons"])
    assert _request_lines(url) == requests_before, "the dry run counted as production traffic"
    answers = httpx.get(f"{url}/status", headers=admin, timeout=30).json()["latest_qa"]
    assert answers["id"] == report["id"] and answers["passed"] is False

    refused = httpx.post(
        f"{url}/swap", headers=admin, json={"reason": "try", "generation": "latest"}, timeout=60
    )
    assert refused.status_code == 409, refused.text
    assert "rejected by QA" in refused.json()["detail"]
