"""The demo's canary: simulated users ask and rate while the gateway decides by itself.

The users are one client app (`ctx.users`, a key of their own) with `plan.population`
distinct user ids, so each id stays on one arm. Each user has one question whose right
answer is known — a taught fact (a phrasing or a paraphrase) or a general question — asks it
now and then, and rates the answer up when it is right, down otherwise: the feedback a
canary weighs. The demo only starts the canary; promotion or abort is the gateway's canary
loop's decision.

Their ratings are there for the canary's statistics only, so once it ends they are
withdrawn (deleted through `/ingest`, which they may do on their own answers): a thumbs-up
makes the answer a training example, and hundreds of them would be the next cycle's data.
Nothing has trained on them yet, so deleting taints no adapter. One fixed question per user
keeps the miner quiet too: the same question again gets the same answer at temperature 0,
which it never proposes as a correction.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from twinloop.demo.client import DemoError, GatewayClient
from twinloop.demo.context import DemoContext
from twinloop.demo.data import Question, is_right

ENDED = {"promoted", "aborted", "inconclusive"}


def user_questions(ctx: DemoContext) -> list[Question]:
    """What the simulated users ask: the taught facts in every wording, and general ones."""
    taught = [
        Question(f"{fact.id}-{n}", q, fact.accept)
        for fact in ctx.good
        for n, q in enumerate((*fact.train_questions, *fact.test_questions))
    ]
    return [*taught, *ctx.general]


class SimulatedUsers:
    """`plan.users` request loops on threads, tallying requests and thumbs per arm."""

    def __init__(self, ctx: DemoContext, users: GatewayClient) -> None:
        self._ctx = ctx
        self._users = users
        self._questions = user_questions(ctx)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.tally: Counter[str] = Counter()
        self.rated: list[str] = []  # the feedback ids sent, withdrawn after the canary
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), daemon=True)
            for n in range(ctx.plan.users)
        ]

    def __enter__(self) -> SimulatedUsers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._users_timeout())

    def _users_timeout(self) -> float:
        return 330.0  # one answer's client timeout, and then some

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.tally)

    def _loop(self, n: int) -> None:
        rng = random.Random(f"{self._ctx.run}-{n}")
        plan = self._ctx.plan
        while not self._stop.is_set():
            number = rng.randrange(plan.population)
            user = f"demo-{self._ctx.run}-user-{number}"
            question = self._questions[number % len(self._questions)]
            try:
                served = self._users.answer(
                    question.question, user_id=user, max_tokens=plan.user_max_tokens
                )
                rating = "up" if is_right(served["answer"], question.accept) else "down"
                item = {"type": "feedback", "id": f"demo-{self._ctx.run}-fb-{served['answer_id']}",
                        "answer_id": served["answer_id"], "rating": rating}  # fmt: skip
                self._users.ingest([item])
                with self._lock:
                    self.rated.append(item["id"])
            except DemoError:
                with self._lock:
                    self.tally["errors"] += 1
                self._stop.wait(0.5)  # an engine error is the canary's to count; don't spin
                continue
            role = served.get("role", "active")
            with self._lock:
                self.tally[f"requests.{role}"] += 1
                self.tally[f"{rating}.{role}"] += 1


def run_canary(ctx: DemoContext, *, chapter: int | None, label: str) -> dict[str, Any]:
    """Start a canary of the staged Shadow, let simulated users use the service until the
    gateway ends it, and return the ended canary (`GET /canary`)."""
    plan = ctx.plan
    if chapter is not None:
        ctx.narrator.chapter(
            chapter,
            "A canary on live traffic, decided by the gateway",
            f"{plan.canary_percent:g} % of users (sticky by user id) are served by Shadow. "
            f"{plan.users} simulated users ask questions with known answers and rate each "
            "answer; the gateway's canary loop compares the arms with sequential tests and "
            "promotes or aborts by itself.",
        )
    assert ctx.users is not None
    started = ctx.clock()
    body = {
        "percent": plan.canary_percent,
        "min_requests": plan.canary_min_requests,
        "max_duration_s": plan.canary_max_duration_s,
        "reason": f"twinloop demo: {label}",
    }
    canary = ctx.api.start_canary(body)
    ctx.narrator.say(
        f"canary {canary['id']} started: snapshot {canary['snapshot_id']} against Active's "
        f"{canary['baseline_snapshot_id']}, at least {canary['min_requests']} requests per arm"
    )
    deadline = started + plan.canary_max_duration_s + 120
    with SimulatedUsers(ctx, ctx.users) as users:
        while True:
            ctx.sleep(plan.poll_s)
            current = ctx.api.canary()
            if current is None or current["id"] != canary["id"]:
                raise DemoError(f"canary {canary['id']} is gone from GET /canary: {current}")
            ctx.narrator.progress(_progress(current, users.snapshot()))
            if current["status"] in ENDED:
                canary = current
                break
            if ctx.clock() > deadline:
                raise DemoError(f"canary {canary['id']} did not end by its deadline")
    seen = users.snapshot()
    withdraw_ratings(ctx, users.rated)
    decision = (canary.get("decisions") or [{}])[0]
    verdict = canary["status"]
    say = ctx.narrator.good if verdict == "promoted" else ctx.narrator.bad
    say(f"canary {verdict}: {decision.get('reason') or canary.get('reason')}")
    ctx.row(
        label,
        f"Active {canary['baseline_snapshot_id']}",
        f"{verdict} after {_requests(seen)}; thumbs up {_rates(seen)}",
        ctx.clock() - started,
    )
    return canary


def withdraw_ratings(ctx: DemoContext, ids: list[str], batch: int = 100) -> None:
    """Delete the simulated users' ratings: they must not become the next cycle's data."""
    assert ctx.users is not None
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        ctx.users.ingest([{"type": "feedback", "id": i, "deleted": True} for i in chunk])
    ctx.narrator.say(
        f"the simulated users' {len(ids)} ratings are withdrawn (deleted): they served the "
        "canary's statistics and must not train the next cycle"
    )


def _progress(canary: dict[str, Any], seen: dict[str, int]) -> str:
    arms = canary.get("arms") or {}
    a, c = arms.get("active", {}), arms.get("canary", {})
    # Coarse, so the line changes (and prints) every few requests, not every poll.
    return (
        f"{canary['status']}: Active {_tens(a.get('requests'))} requests, canary "
        f"{_tens(c.get('requests'))}; user errors {seen.get('errors', 0)}"
    )


def _tens(value: int | None) -> str:
    return f"~{(value or 0) // 10 * 10}"


def _requests(seen: dict[str, int]) -> str:
    active, canary = seen.get("requests.active", 0), seen.get("requests.canary", 0)
    return f"{active + canary} user requests ({canary} on the canary)"


def _rates(seen: dict[str, int]) -> str:
    def rate(role: str) -> str:
        n = seen.get(f"requests.{role}", 0)
        return f"{seen.get(f'up.{role}', 0) / n:.0%}" if n else "-"

    return f"canary {rate('canary')} vs Active {rate('active')}"


def promote_good(ctx: DemoContext) -> None:
    """The good cycle's canary: promoted by the gateway, and the cycle with it."""
    canary = run_canary(ctx, chapter=5, label="canary (simulated users)")
    if canary["status"] != "promoted":
        raise DemoError(
            f"the canary ended {canary['status']}, not promoted: {canary.get('reason')}; "
            "`twinloop canary status` shows both arms"
        )
    ctx.promoted_snapshot = canary["snapshot_id"]
    assert ctx.good_cycle is not None
    cycle = ctx.api.cycle(ctx.good_cycle["id"])
    ctx.narrator.good(
        f"Active now serves snapshot {canary['snapshot_id']}; cycle {cycle['id']} is "
        f"{cycle['state']}"
    )
