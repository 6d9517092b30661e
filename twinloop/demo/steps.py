"""The demo's steps around the cycle: check the stack, ask, teach, retrieval, ask again.

Each step narrates what it does, calls the public API, and records a summary row.
"""

from __future__ import annotations

from typing import Any

from twinloop.demo.client import DemoError
from twinloop.demo.context import DemoContext
from twinloop.demo.data import ORGANISATION, Fact, handbook, is_right
from twinloop.demo.narrator import AnswerLine

BUSY_CYCLE = ("queued", "collecting", "cleaning", "training", "registered", "qa")


def judged(question: str, served: dict[str, Any], accept: list[str], note: str = "") -> AnswerLine:
    """An answer as the narrator shows it: right when it contains an accepted string."""
    return AnswerLine(question, served["answer"], is_right(served["answer"], accept), note)


def preflight(ctx: DemoContext) -> dict[str, Any]:
    """The gateway answers, the token is its admin's, both engines serve, and nothing is
    under way that the demo would trip over (a canary, a training cycle)."""
    ctx.api.healthz()
    status = ctx.api.status()
    sick = [s["slot"] for s in status["slots"] if not s["engine_healthy"]]
    if sick:
        raise DemoError(
            f"the {' and '.join(sick)} engine is not healthy; see `twinloop engines status` "
            "and var/engines/*.log, then run the demo again"
        )
    canary = status.get("canary") or {}
    if canary.get("status") == "running":
        raise DemoError(
            f"canary {canary['id']} is running; let it end or `twinloop canary abort "
            "REASON`, then run the demo again"
        )
    cycle = status.get("latest_training_cycle") or {}
    if cycle.get("state") in BUSY_CYCLE:
        raise DemoError(
            f"training cycle {cycle['id']} is {cycle['state']}; wait for it "
            f"(GET /train/{cycle['id']}), then run the demo again"
        )
    return status


def active_snapshot(status: dict[str, Any]) -> str:
    active = next(s for s in status["slots"] if s["role"] == "active")
    snapshot: str = active["snapshot_id"]
    return snapshot


def open_users(ctx: DemoContext) -> None:
    """The simulated users are one client app: a key of their own, revoked at the end, so
    their feedback is on answers served to them, as `/ingest` requires of a client."""
    key = ctx.api.create_key(f"twinloop demo {ctx.run}: simulated users")
    ctx.users, ctx.users_key_id = ctx.api.as_bearer(key["key"]), key["id"]


def close_users(ctx: DemoContext) -> None:
    if ctx.users is not None:
        ctx.users.close()
    if ctx.users_key_id is not None:
        ctx.api.revoke_key(ctx.users_key_id)
        ctx.users_key_id = None


def ask_before(ctx: DemoContext) -> None:
    """Users ask about the organisation, each fact in three phrasings; Active cannot know."""
    ctx.narrator.chapter(
        1,
        f"Users ask about {ORGANISATION}",
        f"{ORGANISATION[:1].upper()}{ORGANISATION[1:]} is made up, so the base model on "
        "Active cannot know the answers. "
        "Three users ask each question their own way.",
    )
    started = ctx.clock()
    assert ctx.users is not None
    lines = []
    for fact in ctx.good:
        for n, question in enumerate(fact.train_questions):
            served = ctx.users.answer(
                question, user_id=f"demo-{ctx.run}-asker-{n}", max_tokens=ctx.plan.max_tokens
            )
            ctx.answered[question] = served
            if n == 0:
                lines.append(judged(question, served, fact.accept))
    ctx.right_before = sum(line.right for line in lines)
    ctx.narrator.answers("Active (the base model)", lines)
    ctx.narrator.say(f"Active got {ctx.right_before} of {len(lines)} right.")
    if ctx.right_before:
        ctx.narrator.say(
            "(Active knows some already: an earlier demo on this stack taught and promoted them.)"
        )
    ctx.row(
        "users ask Active", "-", f"{ctx.right_before}/{len(lines)} right", ctx.clock() - started
    )


def teach(ctx: DemoContext) -> None:
    """Corrections of those answers (held-out paraphrases for QA) and the handbook page."""
    ctx.narrator.chapter(
        2,
        "Support staff correct the answers and add a document",
        "A thumbs-down with the right answer on each answer; the first of each fact carries "
        "two paraphrases that are never trained, only asked by QA. Plus the organisation's "
        "handbook page. All through POST /ingest.",
    )
    started = ctx.clock()
    items: list[dict[str, Any]] = []
    for fact in ctx.good:
        for n, question in enumerate(fact.train_questions):
            item: dict[str, Any] = {
                "type": "feedback",
                "id": f"demo-{ctx.run}-{fact.id}-{n}",
                "answer_id": ctx.answered[question]["answer_id"],
                "rating": "down",
                "correction": fact.answer,
            }
            if n == 0:
                item["heldout"] = {"paraphrases": fact.test_questions, "accept": fact.accept}
            items.append(item)
    items.append(
        {
            "type": "document",
            "id": f"demo-{ctx.run}-handbook",
            "domain": "general",
            "text": handbook(ctx.good),
            "source": "twinloop demo",
        }
    )
    result = ctx.api.ingest(items)
    stopped = [i for i in result["items"] if i["status"] in ("quarantined", "rejected")]
    if stopped:
        raise DemoError(f"/ingest stopped items it should take: {stopped}")
    corrections = len(items) - 1
    ctx.narrator.good(
        f"{corrections} corrections and 1 document stored; Shadow snapshot "
        f"{result.get('shadow_snapshot_id')} ({result.get('staging')})"
    )
    ctx.row(
        "corrections + document via /ingest",
        "-",
        f"{corrections} corrections, 1 document, staging {result.get('staging')}",
        ctx.clock() - started,
    )


def retrieval_on_shadow(ctx: DemoContext) -> None:
    """Shadow answers from retrieval within seconds; Active still serves what it did."""
    ctx.narrator.chapter(
        3,
        "Shadow knows at once, from retrieval; Active is unchanged",
        "Each correction became a fact document that only Shadow's snapshot pins. An admin "
        "previews Shadow (target: shadow) with paraphrases no one sent.",
    )
    started = ctx.clock()
    shadow_lines, active_lines = [], []
    for fact in ctx.good:
        question = fact.test_questions[0]
        shadow = ctx.api.answer(question, target="shadow", max_tokens=ctx.plan.max_tokens)
        active = ctx.api.answer(question, max_tokens=ctx.plan.max_tokens)
        note = f"{len(shadow.get('contexts') or [])} passages retrieved"
        shadow_lines.append(judged(question, shadow, fact.accept, note))
        active_lines.append(judged(question, active, fact.accept))
    ctx.narrator.answers("Shadow (preview)", shadow_lines)
    ctx.narrator.answers("Active (what users get)", active_lines)
    on_shadow = sum(line.right for line in shadow_lines)
    on_active = sum(line.right for line in active_lines)
    ctx.narrator.say(
        f"Shadow {on_shadow}/{len(shadow_lines)} right from retrieval; Active "
        f"{on_active}/{len(active_lines)}."
    )
    ctx.row(
        "retrieval on Shadow (paraphrases)",
        f"Active {on_active}/{len(active_lines)}",
        f"Shadow {on_shadow}/{len(shadow_lines)}",
        ctx.clock() - started,
    )


def ask_after(ctx: DemoContext) -> None:
    """The same questions, and their paraphrases, now answered right by Active."""
    ctx.narrator.chapter(
        6,
        "The same questions, now on the promoted Active",
        "What users asked at the start, and the held-out paraphrases, from Active.",
    )
    started = ctx.clock()
    assert ctx.users is not None
    lines = []
    for fact in ctx.good:
        for n, question in enumerate((fact.train_questions[0], *fact.test_questions)):
            # A reader per wording: one user's paraphrases in a row would look like retries.
            served = ctx.users.answer(
                question, user_id=f"demo-{ctx.run}-reader-{n}", max_tokens=ctx.plan.max_tokens
            )
            lines.append(judged(question, served, fact.accept))
    ctx.narrator.answers("Active (promoted)", lines)
    asked = [line for line in lines if line.question in ctx.asked]
    right = sum(line.right for line in asked)
    paraphrased = sum(line.right for line in lines if line not in asked)
    ctx.narrator.say(
        f"Active: {right}/{len(asked)} of the first questions and {paraphrased}/"
        f"{len(lines) - len(asked)} paraphrases right (before: {ctx.right_before}/{len(asked)})."
    )
    ctx.row(
        "users ask Active again",
        f"{ctx.right_before}/{len(asked)} right",
        f"{right}/{len(asked)} right, paraphrases {paraphrased}/{len(lines) - len(asked)}",
        ctx.clock() - started,
    )


def fact_examples(ctx: DemoContext, facts: list[Fact], tag: str) -> list[dict[str, Any]]:
    """`facts` as examples (every phrasing; the first with its held-out paraphrases)."""
    items: list[dict[str, Any]] = []
    for fact in facts:
        for n, question in enumerate(fact.train_questions):
            item: dict[str, Any] = {
                "type": "example",
                "id": f"demo-{ctx.run}-{tag}-{fact.id}-{n}",
                "domain": "general",
                "question": question,
                "answer": fact.answer,
            }
            if n == 0:
                item["heldout"] = {"paraphrases": fact.test_questions, "accept": fact.accept}
            items.append(item)
    return items
