"""The learning loop for real: corrections through the API, a real PEFT cycle, real vLLM, QA.

A fresh install: users ask about a made-up system and correct the answers (4 facts, each
corrected by three users phrasing the question their own way, the first with two held-out
paraphrases). One training cycle with the trainer's default settings (steps scale with the
data: 12 examples, 8 passes, 24 steps; SFT only, the DPO stage is test_preference_training.py's
and the demo's) cleans, trains, registers and stages the adapter,
then the QA dry run gates it: taught facts on paraphrases never trained, and every shipped
suite against Active with the paired test, `identity` included (0 for both sides on a fresh
install, so judged against Active). A well-trained adapter passes in its first round and
the cycle waits for the canary. The full 12-fact cycle is bench/learning.py's.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.learning_eval import load_facts
from twinloop.trainer.daemon import open_trainer

pytestmark = pytest.mark.integration

DOMAIN = "general"
FACTS = 4


def _answer(
    url: str, question: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"question": question, "domain": DOMAIN, "max_tokens": 48, **extra}
    response = httpx.post(f"{url}/answer", json=body, headers=headers or {}, timeout=300)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _paired(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    c = comparison
    return (
        f"lost {c['losses']} gained {c['gains']} of {c['cases']}: drop >= "
        f"{c['drop_lower_bound']} (p {c['p_value']})"
    )


async def _run_cycle(settings: Settings, cycle_id: str) -> None:
    async with open_trainer(settings) as trainer:
        assert await trainer.cycles.claim(cycle_id)
        await trainer.runner.run(cycle_id)


def test_a_fresh_install_learns_four_facts_and_the_gate_passes_them(
    two_engine_gateway: str, gateway_settings: Settings
) -> None:
    url = two_engine_gateway
    admin = {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}
    facts = load_facts()[:FACTS]
    lessons = [
        (q, f.answer, {"paraphrases": f.test_questions, "accept": f.accept} if n == 0 else None)
        for f in facts
        for n, q in enumerate(f.train_questions)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(
            pool.map(
                lambda a: _answer(url, a[1][0], user_id=f"user-{a[0] % 3}", max_tokens=16),
                enumerate(lessons),
            )
        )
    feedback = [
        {
            "type": "feedback",
            "id": f"fb-{i}",
            "answer_id": s["answer_id"],
            "rating": "down",
            "correction": answer,
            **({"heldout": heldout} if heldout else {}),
        }
        for i, ((_, answer, heldout), s) in enumerate(zip(lessons, served, strict=True))
    ]
    ingested = httpx.post(f"{url}/ingest", json={"items": feedback}, headers=admin, timeout=120)
    assert ingested.status_code == 202, ingested.text
    assert {item["status"] for item in ingested.json()["items"]} == {"added"}

    requested = httpx.post(f"{url}/train", headers=admin, timeout=30)
    assert requested.status_code == 202, requested.text
    cycle_id = requested.json()["cycle_id"]
    # DPO is test_preference_training.py's and the demo's: SFT alone keeps this test cheap.
    one_round = gateway_settings.model_copy(
        update={
            "qa": gateway_settings.qa.model_copy(update={"max_rounds": 1}),
            "trainer": gateway_settings.trainer.model_copy(update={"preference": False}),
        }
    )
    asyncio.run(_run_cycle(one_round, cycle_id))
    cycle = httpx.get(f"{url}/train/{cycle_id}", headers=admin, timeout=30).json()
    assert cycle["item_counts"]["accepted"] == len(lessons), cycle["item_counts"]
    assert len(cycle["qa_rounds"]) == 1, cycle
    report = httpx.get(
        f"{url}/qa/{cycle['qa_rounds'][0]['qa_run_id']}", headers=admin, timeout=30
    ).json()
    scores = {c["category"]: c for c in report["categories"]}
    print(
        "\nQA report (well-trained adapter): passed",
        report["passed"],
        "reasons",
        report["reasons"],
        "\n"
        + "\n".join(
            f"  {c['category']:12} heldout {c['heldout']:3} train {c['train']:3} shadow "
            f"{c['score']} active {c['active_score']} without retrieval "
            f"{c['without_retrieval']} hallucinations {c['hallucinations']} "
            f"{_paired(c['comparison'])}"
            for c in report["categories"]
        ),
        f"\n  overall {report['overall']} vs active {report['active_overall']}; "
        f"hallucination rate {report['hallucination_rate']} vs "
        f"{report['active_hallucination_rate']}; took {report['seconds']} s; cycle timings "
        f"{cycle['step_timings']}",
    )
    assert cycle["state"] == "awaiting_canary", (cycle["error"], report["reasons"])
    assert report["passed"] is True
    assert scores["feedback"]["heldout"] == 2 * FACTS and scores["feedback"]["score"] >= 0.8
    assert scores["feedback"]["active_score"] == 0.0
    # Forgetting is the paired test's: no significant drop against Active on the same
    # questions, and at most a two-case wobble (greedy answers of a retrained 135M model
    # flip on a few questions either way).
    forgetting = scores["forgetting"]["comparison"]
    assert scores["forgetting"]["heldout"] >= 30 and forgetting["cases"] >= 30
    assert not forgetting["regressed"] and forgetting["losses"] - forgetting["gains"] <= 2
    assert scores["identity"]["active_score"] == 0.0 and scores["identity"]["floor"] is None

    status = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
    assert status["latest_qa"]["id"] == report["id"]
    assert status["latest_qa"]["split_sizes"]["feedback"] == {"train": FACTS, "heldout": 2 * FACTS}
    lineage = httpx.get(
        f"{url}/adapters/{cycle['adapters'][DOMAIN]}/lineage", headers=admin, timeout=30
    ).json()
    assert sorted(i["feedback_id"] for i in lineage["trained_on"]) == sorted(
        f["id"] for f in feedback
    )
