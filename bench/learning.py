"""The figure the project exists to move: does feedback make Shadow better, and is it gated?

Through the public API only, against a running service (`make up`, with the trainer):
teach made-up facts via `/ingest` (examples with held-out paraphrases), trigger `/train`,
wait for the cycle's QA verdict, and print Shadow's and Active's taught-fact accuracy on the
paraphrases (never trained), their general-holdout (forgetting) accuracy, every category,
and the gate's decision with its reasons.

    TWINLOOP_ADMIN_TOKEN=... .venv/bin/python bench/learning.py --facts 10
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/learning.py`: the repository root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import time
import uuid
from typing import Any

import httpx

from bench.learning_eval import load_facts

FINISHED = {"awaiting_canary", "rejected", "staged", "skipped", "failed", "abandoned"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("TWINLOOP_ADMIN_TOKEN", "change-me"))
    parser.add_argument("--facts", type=int, default=10, help="made-up facts to teach (<= 10)")
    parser.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args()
    admin = {"Authorization": f"Bearer {args.token}"}
    run = uuid.uuid4().hex[:8]
    facts = load_facts()[: args.facts]
    items: list[dict[str, Any]] = []
    for fact in facts:
        for n, question in enumerate(fact.train_questions):
            item: dict[str, Any] = {
                "type": "example",
                "id": f"bench-{run}-{fact.id}-{n}",
                "domain": "general",
                "question": question,
                "answer": fact.answer,
            }
            if n == 0:
                item["heldout"] = {"paraphrases": fact.test_questions, "accept": fact.accept}
            items.append(item)
    with httpx.Client(base_url=args.gateway, timeout=120) as http:
        ingested = http.post("/ingest", json={"items": items})
        ingested.raise_for_status()
        started = time.perf_counter()
        requested = http.post("/train", headers=admin)
        requested.raise_for_status()
        cycle_id = requested.json()["cycle_id"]
        print(f"taught {len(items)} examples ({len(facts)} facts); cycle {cycle_id}")
        cycle = _wait(http, admin, cycle_id, args.timeout_s)
        seconds = time.perf_counter() - started
        print(f"cycle ended {cycle['state']} in {seconds:.0f} s; steps {cycle['step_timings']}")
        for entry in cycle["qa_rounds"]:
            report = http.get(f"/qa/{entry['qa_run_id']}", headers=admin).json()
            _print_report(entry["round"], report)
        if cycle.get("error"):
            print(f"cycle error: {cycle['error']}")


def _wait(
    http: httpx.Client, admin: dict[str, str], cycle_id: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        cycle: dict[str, Any] = http.get(f"/train/{cycle_id}", headers=admin).json()
        step = (cycle.get("progress") or {}).get("step", 0)
        where = f"{cycle['state']} round {len(cycle['qa_rounds']) + 1}, step {step // 20 * 20}"
        if where != last:
            print(f"  {where}", flush=True)
            last = where
        if cycle["state"] in FINISHED:
            return cycle
        time.sleep(5)
    raise SystemExit(f"cycle {cycle_id} did not finish within {timeout_s} s")


def _print_report(round_number: int, report: dict[str, Any]) -> None:
    by = {c["category"]: c for c in report["categories"]}
    taught, holdout = by.get("feedback"), by.get("forgetting")
    print(f"\nround {round_number}: QA run {report['id']} ({report['seconds']} s)")
    if taught:
        print(
            f"  taught facts on unseen paraphrases: Shadow {taught['score']}, Active "
            f"{taught['active_score']} ({taught['heldout']} cases; without retrieval "
            f"Shadow {taught['without_retrieval']})"
        )
    if holdout:
        print(
            f"  general holdout (forgetting): Shadow {holdout['score']}, Active "
            f"{holdout['active_score']} ({holdout['heldout']} cases)"
        )
    for c in report["categories"]:
        print(
            f"    {c['category']:12} heldout {c['heldout']:3} shadow {c['score']} active "
            f"{c['active_score']} retrieval gain {c['retrieval_gain']}"
        )
    decision = "PASSED" if report["passed"] else "REJECTED"
    print(f"  gate: {decision}; overall {report['overall']} vs Active {report['active_overall']}")
    for reason in report["reasons"]:
        print(f"    - {reason}")


if __name__ == "__main__":
    main()
