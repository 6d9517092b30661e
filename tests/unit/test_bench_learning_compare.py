"""`bench/learning.py --compare` against a fake gateway: four cycles with the overrides each
variant stands for, fresh lesson ids per variant, the first variant's lessons deleted before
the second, the SFT + DPO cycle swapped in, and one table row per variant (the real run is
against `make up`; its figures are in the notes and bench/REPORT.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest

from twinloop.demo.client import GatewayClient
from twinloop.testing.learning_compare import VARIANTS, compare
from twinloop.testing.learning_eval import load_facts


class FakeGateway:
    """Answers right what Shadow was taught (by the last cycle) or Active holds."""

    def __init__(self) -> None:
        self.facts = load_facts()
        self.ingested: list[list[dict[str, Any]]] = []
        self.trains: list[dict[str, Any]] = []
        self.swaps: list[dict[str, Any]] = []
        self.shadow: set[str] = set()
        self.active: set[str] = set()

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        if path == "/answer":
            knows = self.shadow if body.get("target") == "shadow" else self.active
            question = body["question"]
            fact = next(
                f for f in self.facts if question in (*f.train_questions, *f.test_questions)
            )
            text = fact.answer if fact.id in knows else "I do not know."
            answer = {"answer_id": f"a{len(self.ingested)}", "answer": text}
            return httpx.Response(200, json=answer)
        if path == "/ingest":
            self.ingested.append(body["items"])
            status = "deleted" if body["items"][0].get("deleted") else "added"
            items = [{"id": i["id"], "status": status} for i in body["items"]]
            if status == "added":
                self.shadow = {f.id for f in self.facts if any(
                    i["correction"] == f.answer for i in body["items"])}  # fmt: skip
            return httpx.Response(202, json={"items": items})
        if path == "/train":
            self.trains.append(body)
            return httpx.Response(202, json={"cycle_id": f"c{len(self.trains)}"})
        if path.startswith("/train/"):
            dpo = self.trains[-1]["overrides"]["preference"]
            pairs = {"general": {"heldout_accuracy_sft": 0.5, "heldout_accuracy": 1.0,
                                 "heldout_pairs": 4}} if dpo else {}  # fmt: skip
            return httpx.Response(200, json={
                "state": "awaiting_canary", "step_timings": {"train": 60.0, "qa.1": 90.0},
                "qa_rounds": [{"qa_run_id": "q1"}], "preference": pairs, "error": None,
                "starts": {"general": {"start": "base"}}})  # fmt: skip
        if path.startswith("/qa/"):
            return httpx.Response(200, json={"passed": True, "reasons": [], "categories": [
                {"category": "forgetting", "score": 0.9, "active_score": 0.95}]})  # fmt: skip
        if path == "/swap":
            self.swaps.append(body)
            self.active = set(self.shadow)
            return httpx.Response(200, json={"generation": 2})
        return httpx.Response(404, json={"detail": path})


def _wait(fetch: Any, cycle_id: str, timeout_s: float) -> dict[str, Any]:
    cycle: dict[str, Any] = fetch()
    return cycle


def test_four_variants_are_compared_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    gateway = FakeGateway()
    args = argparse.Namespace(facts_per_set=2, timeout_s=10.0)
    with GatewayClient(
        base_url="http://gw", bearer="t", transport=httpx.MockTransport(gateway.handle)
    ) as api:
        rows = compare(api, args, _wait)

    assert [t["overrides"] for t in gateway.trains] == [
        {**v.overrides, "max_rounds": 1} for v in VARIANTS
    ]
    added = [batch for batch in gateway.ingested if not batch[0].get("deleted")]
    deleted = [batch for batch in gateway.ingested if batch[0].get("deleted")]
    assert len(added) == 4 and len(deleted) == 2
    # Fresh ids per variant; what was deleted is exactly the SFT-only and from-base lessons.
    ids = [{i["id"] for i in batch} for batch in added]
    assert all(len(i) == 6 for i in ids) and len(set().union(*ids)) == 24
    assert [{i["id"] for i in batch} for batch in deleted] == [ids[0], ids[2]]
    assert sum("heldout" in i for i in added[0]) == 2
    assert gateway.swaps == [
        {"reason": gateway.swaps[0]["reason"], "generation": "latest", "force": False}
    ]
    by = {r["variant"]: r for r in rows}
    assert by["SFT only"]["taught_active"] == 0.0 and by["SFT only"]["taught_shadow"] == 1.0
    # After the swap Active knows set A; Shadow (taught set B only, here) does not keep it.
    assert by["continual"]["earlier_active"] == 1.0 and by["continual"]["earlier_shadow"] == 0.0
    assert by["SFT + DPO"]["pairs"]["heldout_accuracy"] == 1.0
    out = capsys.readouterr().out
    assert "| SFT + DPO | A | 0% -> 100% | 100% |" in out and "50% -> 100% (4 held out)" in out
