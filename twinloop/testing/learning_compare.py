"""Which recipe learns best from feedback: SFT alone, SFT + DPO, continual or from the base.

`bench/learning.py --compare` (against a running `make up` with its trainer; the trainer's
schedule off, `TWINLOOP_TRAINER__SCHEDULE=false make up`, so no scheduled cycle takes the
items first). Everything goes through the public API, in one run, four cycles:

1. **SFT only** and 2. **SFT + DPO** teach the same made-up facts (set A) the way users do:
   ask Active, thumbs-down, a correction (so each lesson is also a preference pair: the
   correction over the answer Active gave), under fresh item ids per variant; the first
   variant's items are deleted before the second, so replay never carries them. The second
   is promoted with `/swap`.
3. **From the base** and 4. **continual** teach further facts (set B) on top of Active's
   set-A adapter: the first trains from the base model (set A survives through replay
   only), the second grows from Active's adapter with its KL guard toward it. Again the
   first variant's items are deleted before the second.

Per cycle, measured the same way: the taught facts on their held-out paraphrases (never
trained; the facts are made up, so the base cannot know them), asked of Shadow without
retrieval (the adapter alone) and with it, next to Active; the earlier set's paraphrases on
Shadow without retrieval (what a later cycle kept); the general holdout (QA's `forgetting`
category, Shadow vs Active on the same questions); chosen-over-rejected accuracy on the
cycle's held-out pairs after SFT and after DPO (the trainer's own report); the gate's
verdict; and the cycle time with its phases.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twinloop.demo.client import GatewayClient
from twinloop.factsets import Fact, is_right
from twinloop.testing.learning_eval import load_facts

DOMAIN = "general"
USERS = 3  # lessons come from three users, each phrasing the question their own way
PROBE_TOKENS = 32
WaitForCycle = Callable[[Callable[[], dict[str, Any]], str, float], dict[str, Any]]


@dataclass(frozen=True)
class Variant:
    name: str
    taught: str  # "A" or "B": which fact set this cycle teaches
    overrides: dict[str, Any]
    promote: bool = False
    delete_after: bool = False


VARIANTS = (
    Variant("SFT only", "A", {"preference": False, "continual": False}, delete_after=True),
    Variant("SFT + DPO", "A", {"preference": True, "continual": False}, promote=True),
    Variant("from base", "B", {"preference": False, "continual": False}, delete_after=True),
    Variant("continual", "B", {"preference": False, "continual": True}),
)


@dataclass
class Outcome:
    """What one variant's cycle measured (the table's row)."""

    variant: str
    taught: str
    state: str = ""
    passed: bool | None = None
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    taught_active: float = 0.0
    taught_shadow: float = 0.0
    taught_shadow_rag: float = 0.0
    earlier_shadow: float | None = None
    earlier_active: float | None = None
    holdout_shadow: float | None = None
    holdout_active: float | None = None
    pairs: dict[str, Any] = field(default_factory=dict)
    start: str = ""
    reasons: list[str] = field(default_factory=list)
    promoted: str = ""


def compare(
    api: GatewayClient, args: argparse.Namespace, wait: WaitForCycle
) -> list[dict[str, Any]]:
    facts = load_facts()
    n = args.facts_per_set
    if 2 * n > len(facts):
        raise SystemExit(f"--facts-per-set {n}: there are {len(facts)} made-up facts, two sets")
    sets = {"A": facts[:n], "B": facts[n : 2 * n]}
    run = uuid.uuid4().hex[:8]
    outcomes: list[Outcome] = []
    for variant in VARIANTS:
        print(f"\n== {variant.name}: teach set {variant.taught} ({n} facts) ==", flush=True)
        lesson_ids = _teach(api, sets[variant.taught], f"cmp-{run}-{len(outcomes)}")
        overrides = {**variant.overrides, "max_rounds": 1}
        started = time.perf_counter()
        cycle_id: str = api.train(overrides, reason=f"bench/learning.py --compare: {variant.name}")[
            "cycle_id"
        ]
        cycle = wait(partial(api.cycle, cycle_id), cycle_id, args.timeout_s)
        outcome = Outcome(variant=variant.name, taught=variant.taught)
        outcome.seconds = time.perf_counter() - started
        _read_cycle(api, cycle, outcome)
        earlier = sets["A"] if variant.taught == "B" else None
        _probe(api, sets[variant.taught], earlier, outcome)
        if variant.promote:
            outcome.promoted = _promote(api, outcome)
        if variant.delete_after:
            deletes = [{"type": "feedback", "id": i, "deleted": True} for i in lesson_ids]
            api.ingest(deletes)
        outcomes.append(outcome)
        _print_outcome(outcome)
    print_table(outcomes)
    return [vars(o) for o in outcomes]


def _teach(api: GatewayClient, facts: list[Fact], prefix: str) -> list[str]:
    """Users ask Active and correct it: one feedback item per phrasing, the fact's first
    phrasing carrying the held-out paraphrases. Returns the feedback ids."""
    lessons = [(f, q, k) for f in facts for k, q in enumerate(f.train_questions)]
    served = _ask_all(
        api,
        [{"question": q, "user_id": f"{prefix}-user-{i % USERS}"}
         for i, (_, q, _) in enumerate(lessons)],
    )  # fmt: skip
    items: list[dict[str, Any]] = []
    for (fact, _, k), answer in zip(lessons, served, strict=True):
        item: dict[str, Any] = {
            "type": "feedback",
            "id": f"{prefix}-{fact.id}-{k}",
            "answer_id": answer["answer_id"],
            "rating": "down",
            "correction": fact.answer,
        }
        if k == 0:
            item["heldout"] = {"paraphrases": fact.test_questions, "accept": fact.accept}
        items.append(item)
    result = api.ingest(items)
    statuses = {r["status"] for r in result["items"]}
    if statuses != {"added"}:
        raise SystemExit(f"ingest did not add every lesson: {result['items']}")
    return [item["id"] for item in items]


def _read_cycle(api: GatewayClient, cycle: dict[str, Any], outcome: Outcome) -> None:
    outcome.state = cycle["state"]
    outcome.steps = dict(cycle["step_timings"])
    outcome.pairs = (cycle.get("preference") or {}).get(DOMAIN) or {}
    outcome.start = ((cycle.get("starts") or {}).get(DOMAIN) or {}).get("start", "")
    if cycle.get("error"):
        outcome.reasons.append(f"error: {cycle['error']}")
    if not cycle["qa_rounds"]:
        return
    report = api.qa_report(cycle["qa_rounds"][-1]["qa_run_id"])
    outcome.passed = report["passed"]
    outcome.reasons.extend(report["reasons"])
    forgetting = next((c for c in report["categories"] if c["category"] == "forgetting"), None)
    if forgetting is not None:
        outcome.holdout_shadow = forgetting["score"]
        outcome.holdout_active = forgetting["active_score"]


def _probe(
    api: GatewayClient, taught: list[Fact], earlier: list[Fact] | None, outcome: Outcome
) -> None:
    """Ask the held-out paraphrases directly: Shadow without retrieval is the adapter alone."""
    outcome.taught_active = _accuracy(api, taught, "active", use_rag=False)
    outcome.taught_shadow = _accuracy(api, taught, "shadow", use_rag=False)
    outcome.taught_shadow_rag = _accuracy(api, taught, "shadow", use_rag=True)
    if earlier is not None:
        outcome.earlier_shadow = _accuracy(api, earlier, "shadow", use_rag=False)
        outcome.earlier_active = _accuracy(api, earlier, "active", use_rag=False)


def _accuracy(api: GatewayClient, facts: list[Fact], target: str, *, use_rag: bool) -> float:
    cases = [(q, f.accept) for f in facts for q in f.test_questions]
    asked = [{"question": q, "target": target, "use_rag": use_rag, "max_tokens": PROBE_TOKENS}
             for q, _ in cases]  # fmt: skip
    answers = [a["answer"] for a in _ask_all(api, asked)]
    right = sum(is_right(a, accept) for a, (_, accept) in zip(answers, cases, strict=True))
    return right / len(cases)


def _ask_all(api: GatewayClient, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`/answer` for each of `requests` (keyword arguments of `GatewayClient.answer`), four
    at a time, in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda r: api.answer(domain=DOMAIN, **r), requests))


def _promote(api: GatewayClient, outcome: Outcome) -> str:
    """Make the cycle's Shadow Active, so set B's cycles build on it; a gate rejection is
    overridden (and said) because the comparison needs a set-A adapter on Active."""
    forced = outcome.passed is not True
    api.swap(f"bench/learning.py --compare: {outcome.variant} becomes Active", force=forced)
    return "swapped (forced past a rejecting gate)" if forced else "swapped"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _pair_accuracy(pairs: dict[str, Any]) -> str:
    if not pairs:
        return "-"
    return (
        f"{_pct(pairs.get('heldout_accuracy_sft'))} -> {_pct(pairs.get('heldout_accuracy'))}"
        f" ({pairs.get('heldout_pairs', '?')} held out)"
    )


def _print_outcome(o: Outcome) -> None:
    print(
        f"  cycle {o.state} in {o.seconds:.0f} s (gate passed: {o.passed}; start {o.start or '?'})"
        f"; steps: {', '.join(f'{k} {v:.0f} s' for k, v in o.steps.items())}"
    )
    for reason in o.reasons:
        print(f"    - {reason}")
    if o.pairs:
        print(f"  DPO report: {o.pairs}")
    if o.promoted:
        print(f"  promoted: {o.promoted}")
    print(
        f"  taught set {o.taught} on held-out paraphrases: Active {_pct(o.taught_active)}, "
        f"Shadow {_pct(o.taught_shadow)} without retrieval, {_pct(o.taught_shadow_rag)} with; "
        f"set A kept (no retrieval): Shadow {_pct(o.earlier_shadow)}, Active "
        f"{_pct(o.earlier_active)}; general holdout Active {_pct(o.holdout_active)}, Shadow "
        f"{_pct(o.holdout_shadow)}",
        flush=True,
    )


def print_table(outcomes: list[Outcome]) -> None:
    header = (
        "| variant | set | taught facts, Active -> Shadow (no RAG) | Shadow with RAG | "
        "set A kept (Shadow, no RAG; Active) | general holdout Active -> Shadow | "
        "held-out pairs SFT -> DPO | gate | cycle s |"
    )
    print("\n" + header)
    print("|---" * (header.count("|") - 1) + "|")
    for o in outcomes:
        kept = "-" if o.earlier_shadow is None else f"{_pct(o.earlier_shadow)}; "
        kept += "" if o.earlier_active is None else _pct(o.earlier_active)
        print(
            f"| {o.variant} | {o.taught} | {_pct(o.taught_active)} -> {_pct(o.taught_shadow)} | "
            f"{_pct(o.taught_shadow_rag)} | {kept} | {_pct(o.holdout_active)} -> "
            f"{_pct(o.holdout_shadow)} | {_pair_accuracy(o.pairs)} | "
            f"{'passed' if o.passed else o.state} | {o.seconds:.0f} |"
        )
