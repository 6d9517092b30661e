"""The demo's training cycles: the good one, followed to its QA report, and the bad one."""

from __future__ import annotations

from typing import Any

from twinloop.demo.canary import run_canary
from twinloop.demo.client import DemoError
from twinloop.demo.context import DemoContext
from twinloop.demo.steps import active_snapshot, fact_examples, judged

# Where the trainer is done with a cycle (twinloop.states.FINISHED, as the API spells it).
FINISHED = {
    "staged", "awaiting_canary", "canary", "promoted", "rolled_back", "inconclusive",
    "rejected", "skipped", "abandoned", "failed",
}  # fmt: skip
STATES = {
    "queued": "waiting for the trainer",
    "collecting": "collecting the new items",
    "cleaning": "cleaning: redaction, injection screen, duplicates, caps",
    "training": "training the LoRA adapter",
    "registered": "adapter registered; staging it on Shadow",
    "qa": "QA dry run: Shadow and Active on the benchmark suites",
}


def follow_cycle(ctx: DemoContext, cycle_id: str) -> dict[str, Any]:
    """Poll `GET /train/{id}` until the trainer is done with it, narrating each change."""
    started = ctx.clock()
    deadline = started + ctx.plan.cycle_timeout_s
    while True:
        cycle = ctx.api.cycle(cycle_id)
        state = cycle["state"]
        if state in FINISHED:
            return cycle
        if state == "queued" and ctx.clock() - started > ctx.plan.queued_timeout_s:
            raise DemoError(
                f"no trainer took training cycle {cycle_id} in "
                f"{ctx.plan.queued_timeout_s:.0f} s: `twinloop up` starts one (not with "
                "--no-trainer), or run `twinloop trainer`; its log: var/training/trainer.log"
            )
        progress = cycle.get("progress") or {}
        where = STATES.get(state, state)
        if state == "training" and progress.get("total"):
            where += f" ({progress.get('domain')}: step {progress['step']} of {progress['total']})"
        rounds = len(cycle.get("qa_rounds") or [])
        ctx.narrator.progress(f"round {rounds + 1}: {where}" if rounds else where)
        if ctx.clock() > deadline:
            raise DemoError(
                f"training cycle {cycle_id} is still {state} after "
                f"{ctx.plan.cycle_timeout_s:.0f} s; is the trainer running (`twinloop up` "
                "starts it; its log: var/training/trainer.log)?"
            )
        ctx.sleep(ctx.plan.poll_s)


def _timings(cycle: dict[str, Any]) -> str:
    return ", ".join(f"{step} {s:.0f} s" for step, s in cycle.get("step_timings", {}).items())


def _by_category(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["category"]: c for c in report["categories"]}


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def train_good(ctx: DemoContext) -> None:
    """`POST /train`, the cycle followed to its end, and its QA report."""
    ctx.narrator.chapter(
        4,
        "The trainer learns the corrections into an adapter, and QA gates it",
        "One cycle: collect, clean, mix with replay, train a LoRA (with the KL guard toward "
        "the base model), register, stage on Shadow, then the QA dry run on held-out cases "
        "only, Shadow against Active.",
    )
    started = ctx.clock()
    requested = ctx.api.train(ctx.plan.good_overrides, "twinloop demo")
    ctx.narrator.say(f"training cycle {requested['cycle_id']} requested")
    cycle = follow_cycle(ctx, requested["cycle_id"])
    seconds = ctx.clock() - started
    ctx.good_cycle = cycle
    if cycle["state"] != "awaiting_canary":
        raise DemoError(
            f"the training cycle ended {cycle['state']}: {cycle.get('error')} (GET "
            f"/train/{cycle['id']})"
        )
    adapters = ", ".join(f"{d} {a}" for d, a in cycle["adapters"].items())
    ctx.narrator.good(f"cycle {cycle['id']} passed QA: adapter {adapters}; {_timings(cycle)}")
    report = ctx.api.qa_report(cycle["qa_rounds"][-1]["qa_run_id"])
    ctx.narrator.qa_report(report)
    ctx.row(
        "training cycle (train, stage, QA)", "-", f"{cycle['state']}, adapter {adapters}", seconds
    )
    _qa_rows(ctx, report)


def _qa_rows(ctx: DemoContext, report: dict[str, Any], prefix: str = "QA") -> None:
    by = _by_category(report)
    for category, label in (("feedback", "taught facts"), ("forgetting", "general holdout")):
        c = by.get(category)
        if c is not None:
            ctx.row(
                f"{prefix}: {label}",
                f"Active {_score(c.get('active_score'))}",
                f"Shadow {_score(c.get('score'))}",
                None,
            )
    verdict = "passed" if report["passed"] else "rejected"
    overall = f"overall Shadow {_score(report.get('overall'))}"
    dry_run = f"dry run {report.get('seconds') or 0:.0f} s of the cycle's time"
    ctx.row(f"{prefix}: gate", f"Active {_score(report.get('active_overall'))}",
            f"{verdict}, {overall} ({dry_run})", None)  # fmt: skip


def bad_update(ctx: DemoContext) -> None:
    """An over-trained update — the admin's override: high learning rate, no KL guard —
    which QA rejects (or, should QA pass it, its canary aborts); users never see it."""
    o = ctx.plan.bad_overrides
    ctx.narrator.chapter(
        7,
        "A deliberately bad update",
        f"New facts, trained with an admin's per-cycle override: learning rate "
        f"{o.get('learning_rate')}, KL guard weight {o.get('kl_weight')} (off), up to "
        f"{o.get('step_budget')} steps. Such an adapter memorises its facts and forgets "
        "around them; the gate must stop it before any user sees it.",
    )
    started = ctx.clock()
    before = active_snapshot(ctx.api.status())
    ingested = ctx.api.ingest(fact_examples(ctx, ctx.bad, "bad"))
    ctx.narrator.say(f"{len(ingested['items'])} examples of {len(ctx.bad)} new fact(s) stored")
    requested = ctx.api.train(o, "twinloop demo: a deliberately over-trained update")
    ctx.narrator.say(f"training cycle {requested['cycle_id']} requested with {o}")
    cycle = follow_cycle(ctx, requested["cycle_id"])
    report = ctx.api.qa_report(cycle["qa_rounds"][-1]["qa_run_id"]) if cycle["qa_rounds"] else None
    if report is not None:
        ctx.narrator.qa_report(report)
    if cycle["state"] == "rejected":
        ctx.narrator.good(f"QA rejected cycle {cycle['id']}: {cycle.get('error')}")
        stopped_by = "QA rejected it"
        _canary_refused(ctx)
    elif cycle["state"] == "awaiting_canary":
        ctx.narrator.bad("QA let it through; now the canary must catch it")
        canary = run_canary(ctx, chapter=None, label="bad update's canary")
        if canary["status"] == "promoted":
            raise DemoError(
                f"the over-trained update was promoted by canary {canary['id']}: "
                f"{canary.get('reason')}"
            )
        stopped_by = f"its canary ended {canary['status']}"
    else:
        raise DemoError(
            f"the over-trained cycle ended {cycle['state']}: {cycle.get('error')} (GET "
            f"/train/{cycle['id']})"
        )
    after = _users_still_served(ctx, before)
    # An operator's tidy-up: Shadow goes back to Active's adapters, so the next change (or
    # the next demo) starts from what users are served, not from the rejected adapter.
    reset = ctx.api.stage_copy_of_active("twinloop demo: Shadow back to Active's adapters")
    ctx.narrator.say(f"Shadow reset to a copy of Active: snapshot {reset['id']}")
    ctx.row(
        "bad update (over-trained)",
        f"Active {before}",
        f"{stopped_by}; Active {after}",
        ctx.clock() - started,
    )
    if report is not None:
        _qa_rows(ctx, report, prefix="bad update QA")


def _canary_refused(ctx: DemoContext) -> None:
    """What an operator (or the canary loop) gets when trying to put it before users."""
    status, body = ctx.api.try_start_canary(
        {"percent": ctx.plan.canary_percent, "reason": "twinloop demo: try the rejected Shadow"}
    )
    if status == 409:
        ctx.narrator.good(f"a canary of it is refused: {body.get('detail')}")
        return
    if status < 400:  # not expected: stop it at once, and say so
        ctx.api.abort_canary("twinloop demo: a QA-rejected Shadow must not reach users")
    raise DemoError(f"POST /canary of a QA-rejected Shadow answered {status}: {body}")


def _users_still_served(ctx: DemoContext, before: str) -> str:
    """Active still serves the promoted snapshot; its answers are still right."""
    after = active_snapshot(ctx.api.status())
    if after != before:
        raise DemoError(f"Active changed from {before} to {after} during the bad update")
    assert ctx.users is not None
    lines = []
    for n, fact in enumerate(ctx.good[:2]):
        question = fact.test_questions[0]
        served = ctx.users.answer(
            question, user_id=f"demo-{ctx.run}-checker-{n}", max_tokens=ctx.plan.max_tokens
        )
        lines.append(judged(question, served, fact.accept))
    general = ctx.general[0]
    served = ctx.users.answer(general.question, max_tokens=ctx.plan.max_tokens)
    lines.append(judged(general.question, served, general.accept))
    ctx.narrator.answers("Active, after the bad update (what users get)", lines)
    ctx.narrator.good(f"Active still serves snapshot {after}: users never saw the bad update")
    return f"{after} (unchanged)"
