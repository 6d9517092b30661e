"""The figure the project exists to move: does feedback make Shadow better, and is it gated?

Through the public API only, against a running service (`make up`, with the trainer):
teach made-up facts via `/ingest` (examples with held-out paraphrases), trigger `/train`,
wait for the cycle's QA verdict, and print per round: Shadow's and Active's taught-fact
accuracy on the paraphrases (never trained; the facts are made up, so the base cannot know
them), their general-holdout (forgetting) accuracy, every category with the gate's paired
statistics (losses, gains, p-value, bound, tolerance, floor), the decision with its reasons,
and the time per step (training seconds per step per adapter). The cycle must end
`awaiting_canary` within 15 minutes on 2 cores (issue 11).

    .venv/bin/python bench/learning.py --facts 12

`--compare` runs four cycles instead and prints them side by side: SFT only, SFT + DPO,
from the base and continual (twinloop/testing/learning_compare.py says how).

(admin token from `--token`, else TWINLOOP_ADMIN_TOKEN, else the file `make up` wrote into the
data directory.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from bench.results import add_json_option, write_results
from twinloop.demo.client import GatewayClient
from twinloop.states import FINISHED
from twinloop.testing.admin import admin_headers
from twinloop.testing.learning_compare import compare
from twinloop.testing.learning_eval import load_facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=None, help="default: the admin token in force")
    parser.add_argument("--facts", type=int, default=12, help="made-up facts to teach (<= 12)")
    parser.add_argument("--timeout-s", type=float, default=3600)
    parser.add_argument(
        "--compare", action="store_true", help="SFT / SFT + DPO / from base / continual"
    )
    parser.add_argument(
        "--facts-per-set", type=int, default=6, help="with --compare: facts per set (<= 6)"
    )
    add_json_option(parser)
    args = parser.parse_args()
    admin = admin_headers(args.token)
    bearer = admin["Authorization"].removeprefix("Bearer ")
    api = GatewayClient(base_url=args.gateway, bearer=bearer)
    if args.compare:
        with api:
            write_results(args.json, "learning_compare", {"variants": compare(api, args, _wait)})
        return
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
    with api, httpx.Client(base_url=args.gateway, timeout=120) as http:
        ingested = http.post("/ingest", json={"items": items}, headers=admin)
        ingested.raise_for_status()
        started = time.perf_counter()
        requested = http.post("/train", headers=admin)
        requested.raise_for_status()
        cycle_id = requested.json()["cycle_id"]
        print(f"taught {len(items)} examples ({len(facts)} facts); cycle {cycle_id}")
        cycle = _wait(partial(api.cycle, cycle_id), cycle_id, args.timeout_s)
        seconds = time.perf_counter() - started
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in cycle["step_timings"].items())
        print(f"cycle ended {cycle['state']} in {seconds:.0f} s; steps: {timings}")
        if cycle.get("targets"):
            print(f"targeted the weak spots of a rejected cycle: {cycle['targets']}")
        figures: dict[str, Any] = {
            "facts": len(facts),
            "examples": len(items),
            "state": cycle["state"],
            "seconds": seconds,
            "step_seconds": cycle["step_timings"],
            "adapters": {},
            "rounds": [],
        }
        for domain, adapter_id in sorted(cycle["adapters"].items()):
            lineage = http.get(f"/adapters/{adapter_id}/lineage", headers=admin).json()
            metrics = lineage["adapter"]["metrics"]
            per_step = metrics["seconds"] / max(1, metrics["steps"])
            figures["adapters"][domain] = {**metrics, "seconds_per_step": per_step}
            print(
                f"  adapter {domain}: {metrics['steps']} steps on {metrics['new_examples']} new "
                f"+ {metrics['replayed_examples']} replayed examples in {metrics['seconds']} s "
                f"({per_step:.2f} s/step, the pass's shared work included)"
            )
        for entry in cycle["qa_rounds"]:
            report = http.get(f"/qa/{entry['qa_run_id']}", headers=admin).json()
            _print_report(entry["round"], report)
            figures["rounds"].append(_round_figures(entry["round"], report))
            if entry.get("corrections"):
                print(f"  corrections: {entry['corrections']}")
        if cycle.get("error"):
            print(f"cycle error: {cycle['error']}")
    write_results(args.json, "learning", figures)


def _round_figures(round_number: int, report: dict[str, Any]) -> dict[str, Any]:
    """Per QA round: each category's Shadow and Active scores, and the gate's verdict."""
    return {
        "round": round_number,
        "passed": report["passed"],
        "seconds": report["seconds"],
        "categories": {
            c["category"]: {
                "shadow": c["score"],
                "active": c["active_score"],
                "heldout": c["heldout"],
                "floor": c.get("floor"),
            }
            for c in report["categories"]
        },
        "reasons": report["reasons"],
    }


def _wait(fetch: Callable[[], dict[str, Any]], cycle_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the cycle (`fetch`: `GET /train/{cycle_id}`) until the trainer is done with it."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        cycle = fetch()
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
            f"{c['active_score']} retrieval gain {c['retrieval_gain']} floor {c.get('floor')}"
            f"{_paired(c.get('comparison'))}"
        )
    print(
        f"    {'halluc.':12} rate shadow {report['hallucination_rate']} active "
        f"{report['active_hallucination_rate']}{_paired(report.get('hallucination_comparison'))}"
    )
    decision = "PASSED" if report["passed"] else "REJECTED"
    print(f"  gate: {decision}; overall {report['overall']} vs Active {report['active_overall']}")
    for reason in report["reasons"]:
        print(f"    - {reason}")


def _paired(test: dict[str, Any] | None) -> str:
    if not test:
        return ""
    verdict = "REGRESSED" if test["regressed"] else "ok"
    return (
        f" | lost {test['losses']} gained {test['gains']} of {test['cases']}, drop >= "
        f"{test['drop_lower_bound']:+.3f} at {test['confidence']:.0%} (McNemar p "
        f"{test['p_value']:.3g}), tolerance {test['tolerance']}: {verdict}"
    )


if __name__ == "__main__":
    main()
