"""The demo from first question to summary table: the steps in order, timed, narrated."""

from __future__ import annotations

import time
from collections.abc import Callable

from twinloop.demo.canary import promote_good
from twinloop.demo.client import DemoError, GatewayClient
from twinloop.demo.context import DemoContext
from twinloop.demo.cycle import bad_update, train_good
from twinloop.demo.data import load_facts, load_general
from twinloop.demo.narrator import Narrator
from twinloop.demo.plan import DemoPlan
from twinloop.demo.steps import (
    ask_after,
    ask_before,
    close_users,
    open_users,
    preflight,
    retrieval_on_shadow,
    teach,
)

STORY: tuple[Callable[[DemoContext], None], ...] = (
    ask_before,
    teach,
    retrieval_on_shadow,
    train_good,
    promote_good,
    ask_after,
    bad_update,
)


def demo_context(
    api: GatewayClient,
    plan: DemoPlan,
    narrator: Narrator,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DemoContext:
    facts = load_facts()
    if plan.good_facts + plan.bad_facts > len(facts):
        raise DemoError(f"the demo has {len(facts)} facts; the plan asks for more")
    return DemoContext(
        api=api,
        narrator=narrator,
        plan=plan,
        good=facts[: plan.good_facts],
        bad=facts[plan.good_facts : plan.good_facts + plan.bad_facts],
        general=load_general(),
        sleep=sleep,
        clock=clock,
    )


def run_demo(ctx: DemoContext, *, fast: bool = False) -> float:
    """Tell the whole story; returns its seconds. A `DemoError` stops it (narrated, then
    raised); the simulated users' key is revoked either way."""
    started = ctx.clock()
    ctx.narrator.title(ctx.api.base_url, fast)
    try:
        preflight(ctx)
        open_users(ctx)
        try:
            for step in STORY:
                step(ctx)
        finally:
            close_users(ctx)
    except DemoError as e:
        ctx.narrator.failed(e.message)
        if ctx.rows:
            ctx.narrator.summary(ctx.rows, ctx.clock() - started)
        raise
    total = ctx.clock() - started
    ctx.narrator.summary(ctx.rows, total)
    adapter = (ctx.good_cycle or {}).get("adapters", {}).get("general")
    ctx.narrator.look_deeper(ctx.api.base_url, adapter)
    return total
