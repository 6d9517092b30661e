"""The learning loop for real: corrections through the API, a real PEFT cycle, real vLLM.

Users ask about a made-up system and correct the answers (10 facts, each corrected by three
users phrasing the question their own way). One training cycle with the trainer's default
settings cleans, trains, registers and stages the adapter; the shadow engine then answers
questions worded differently from every correction, and a general holdout the base model
knows must come out within one answer of the base model (Active).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from bench.learning_eval import load_facts, load_holdout, score
from twinloop.settings import Settings
from twinloop.training.daemon import open_trainer

pytestmark = pytest.mark.integration

DOMAIN = "general"


def _answer(
    url: str, question: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"question": question, "domain": DOMAIN, "max_tokens": 48, **extra}
    response = httpx.post(f"{url}/answer", json=body, headers=headers or {}, timeout=300)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _answers(url: str, questions: list[str], **extra: Any) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return [r["answer"] for r in pool.map(lambda q: _answer(url, q, **extra), questions)]


async def _run_cycle(settings: Settings, cycle_id: str) -> None:
    async with open_trainer(settings) as trainer:
        assert await trainer.cycles.claim(cycle_id)
        await trainer.runner.run(cycle_id)


def _wait_for_shadow(url: str, admin: dict[str, str], snapshot_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
        shadow = next(s for s in status["slots"] if s["role"] == "shadow")
        if shadow["snapshot_id"] == snapshot_id and not shadow["missing_adapters"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway never served {snapshot_id} on Shadow")


def test_corrections_teach_ten_facts_and_the_general_holdout_stays(
    two_engine_gateway: str, gateway_settings: Settings
) -> None:
    url = two_engine_gateway
    admin = {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}
    facts, holdout = load_facts(), load_holdout()
    asked = [(f, q, user) for f in facts for user, q in enumerate(f.train_questions)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(
            pool.map(lambda a: _answer(url, a[1], user_id=f"user-{a[2]}", max_tokens=16), asked)
        )
    feedback = [
        {
            "type": "feedback",
            "id": f"fb-{i}",
            "answer_id": s["answer_id"],
            "rating": "down",
            "correction": fact.answer,
        }
        for i, ((fact, _, _), s) in enumerate(zip(asked, served, strict=True))
    ]
    ingested = httpx.post(f"{url}/ingest", json={"items": feedback}, timeout=120)
    assert ingested.status_code == 202, ingested.text
    assert {item["status"] for item in ingested.json()["items"]} == {"added"}

    requested = httpx.post(f"{url}/train", headers=admin, timeout=30)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    asyncio.run(_run_cycle(gateway_settings, cycle_id))
    cycle = httpx.get(f"{url}/train/{cycle_id}", headers=admin, timeout=30).json()
    assert cycle["state"] == "staged", cycle
    assert cycle["item_counts"]["accepted"] == 30, cycle["item_counts"]
    _wait_for_shadow(url, admin, cycle["snapshot_id"])

    paraphrases = [f.test_questions[0] for f in facts]
    accepts = [f.accept for f in facts]
    shadow_facts = score(_answers(url, paraphrases, target="shadow", headers=admin), accepts)
    active_facts = score(_answers(url, paraphrases), accepts)
    holdout_questions, holdout_accepts = [h.question for h in holdout], [h.accept for h in holdout]
    shadow_holdout = score(
        _answers(url, holdout_questions, target="shadow", headers=admin), holdout_accepts
    )
    active_holdout = score(_answers(url, holdout_questions), holdout_accepts)
    print(
        f"\nfacts on unseen paraphrases: shadow {shadow_facts}/10, active {active_facts}/10; "
        f"general holdout: shadow {shadow_holdout}/{len(holdout)}, "
        f"active {active_holdout}/{len(holdout)}; cycle timings {cycle['step_timings']}"
    )
    assert active_facts == 0
    assert shadow_facts >= 8
    assert len(holdout) >= 30 and shadow_holdout >= active_holdout - 1

    lineage = httpx.get(
        f"{url}/adapters/{cycle['adapters'][DOMAIN]}/lineage", headers=admin, timeout=30
    ).json()
    assert sorted(i["feedback_id"] for i in lineage["trained_on"]) == sorted(
        f["id"] for f in feedback
    )
