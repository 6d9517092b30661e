"""`twinloop demo --fast` against a real stack: both vLLM engines, the gateway over HTTP, a
real trainer (PEFT on the base model) and Chroma — the whole story, end to end.

Kept cheap where the stack allows it without changing what the demo does: the QA suites
are the shipped `general` suite's first 24 cases (the gate's `forgetting` category is its
held-out half; `feedback` is built from the demo's corrections as always), the canary loop
evaluates every second with the wider margins of test_canary_real_engines.py (so about 50
requests per arm decide instead of a few hundred), and the trainer runs in this process.
The demo itself is `DemoPlan.fast()` with a canary minimum of 20 requests per arm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tests.integration.conftest import serve_gateway
from twinloop.demo.client import GatewayClient
from twinloop.demo.driver import demo_context, run_demo
from twinloop.demo.narrator import Narrator
from twinloop.demo.plan import DemoPlan
from twinloop.engines.process import EngineProcesses
from twinloop.qa.suites import DATA_DIR
from twinloop.routing.router import DomainRouter
from twinloop.settings import CanarySettings, Settings
from twinloop.testing.ports import free_port
from twinloop.trainer import daemon

pytestmark = pytest.mark.integration

SUITE_CASES = 24


@pytest.fixture
def demo_settings(gateway_settings: Settings, tmp_path: Path) -> Settings:
    suites = tmp_path / "suites"
    suites.mkdir()
    general = (DATA_DIR / "general.jsonl").read_text().splitlines()[:SUITE_CASES]
    (suites / "general.jsonl").write_text("\n".join(general) + "\n")
    canary = CanarySettings(
        error_margin=0.1,
        feedback_margin=0.2,
        latency_factor=5.0,
        evaluate_s=1.0,
        split_delay_s=0,  # one gateway: the split starts at once
    )
    return gateway_settings.model_copy(
        update={
            "canary": canary,
            "qa": gateway_settings.qa.model_copy(update={"suite_dir": suites}),
            "trainer": gateway_settings.trainer.model_copy(
                update={"schedule": False, "poll_s": 0.5, "metrics_port": free_port()}
            ),
        }
    )


@pytest.fixture
def trainer_thread(demo_settings: Settings) -> Iterator[None]:
    """`twinloop trainer`'s loop on a thread of this process: it claims what /train queues."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    async def serve() -> None:
        async with daemon.open_trainer(demo_settings) as trainer:
            await daemon.serve(trainer, stop)

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as e:  # surfaced by the test, not lost in the thread
            failed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=600)
    loop.close()
    assert not failed, failed


def test_the_fast_demo_runs_end_to_end_on_the_real_stack(
    demo_settings: Settings,
    real_engines: EngineProcesses,
    real_router: DomainRouter,
    trainer_thread: None,
) -> None:
    plan = dataclasses.replace(DemoPlan.fast(), canary_min_requests=20, poll_s=1.0)
    out = io.StringIO()
    narrator = Narrator(Console(file=out, width=140, color_system=None))
    token = demo_settings.admin_token.get_secret_value()
    with (
        serve_gateway(demo_settings, real_router) as url,
        GatewayClient(base_url=url, bearer=token) as api,
    ):
        ctx = demo_context(api, plan, narrator)
        try:
            seconds = run_demo(ctx, fast=True)
        finally:
            print(out.getvalue())
        status = api.status()

    rows = {row.step: row for row in ctx.rows}
    print(f"demo took {seconds:.0f} s")
    assert rows["users ask Active"].after == "0/2 right"
    # The 135M model does not always copy a retrieved fact into its answer; one of two is the
    # point: Shadow knows what Active cannot.
    retrieval = rows["retrieval on Shadow (paraphrases)"]
    assert retrieval.before == "Active 0/2" and retrieval.after in ("Shadow 1/2", "Shadow 2/2")
    assert rows["canary (simulated users)"].after.startswith("promoted after")
    assert rows["users ask Active again"].after.startswith("2/2 right")
    assert rows["bad update (over-trained)"].after.endswith("(unchanged)")
    active = next(s for s in status["slots"] if s["role"] == "active")
    assert active["snapshot_id"] == ctx.promoted_snapshot
    # The good cycle was promoted by the canary; the bad one never reached Active.
    assert status["latest_training_cycle"]["state"] in ("rejected", "rolled_back")
