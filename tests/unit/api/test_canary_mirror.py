"""Mirroring: a share of Active's requests asked of the canary in the background, paired."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.conftest import ADMIN_HEADERS
from tests.unit.api.canary_steps import stage_adapter, start_canary
from twinloop.canary.decision import Verdict
from twinloop.canary.pairs import JudgeChoice, Reply
from twinloop.canary.service import CanaryService
from twinloop.db.models import Answer, CanaryArmEvent, CanaryPair
from twinloop.inference.mirror import MirrorTasks
from twinloop.metrics import Metrics
from twinloop.runtime import Runtime
from twinloop.testing.engine import BASE_MODEL, FakeEngine

RIGHT = "Paris is the capital of France."


async def _ask(client: httpx.AsyncClient, user: str, domain: str = "law") -> dict[str, Any]:
    response = await client.post(
        "/answer", json={"question": "Capital of France?", "domain": domain, "user_id": user}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _rows(runtime: Runtime, model: Any) -> list[Any]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(select(model))).scalars().all())


async def test_mirroring_never_changes_what_the_user_receives(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    shadow_model, _ = await stage_adapter(client, admin_headers, tmp_path, "law")
    without = await _ask(client, "u1")  # no canary yet: what Active answers
    await start_canary(client, admin_headers, percent=0, mirror_percent=100)

    mirrored = await _ask(client, "u1")
    await runtime.answers.wait_for_mirrors()  # the mirror runs after the answer is returned
    fake_engine.down.add("green")
    canary_down = await _ask(client, "u1")
    await runtime.answers.wait_for_mirrors()

    for body in (mirrored, canary_down):
        assert body["answer"] == without["answer"] and body["slot"] == "blue"
        assert body["role"] == "active"
    pairs = sorted(await _rows(runtime, CanaryPair), key=lambda p: p.canary_error is not None)
    assert [p.answer_id for p in pairs] == [mirrored["answer_id"], canary_down["answer_id"]]
    assert pairs[0].canary_answer == f"{RIGHT} [{shadow_model}]" and pairs[0].domain == "law"
    assert pairs[0].canary_error is None and pairs[0].canary_finish_reason == "stop"
    assert pairs[1].canary_answer == "" and "EngineUnavailableError" in pairs[1].canary_error
    # The mirror writes no answer and counts to no arm: only the users' three answers exist.
    assert len(await _rows(runtime, Answer)) == 3
    assert await _rows(runtime, CanaryArmEvent) == []
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    tally = status["current"]["stats"]["pairs"]["tally"]
    assert (tally["undecided"], tally["losses"]) == (1, 1)
    metrics = runtime.metrics.render().decode()
    assert 'twinloop_canary_mirrors_total{outcome="paired"} 1.0' in metrics
    assert 'twinloop_canary_mirrors_total{outcome="failed"} 1.0' in metrics


async def test_a_drifting_shadow_is_aborted_on_mirrors_before_any_user_meets_it(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    shadow_model, _ = await stage_adapter(client, admin_headers, tmp_path, "general")
    fake_engine.answer_for = lambda model, _q: "bananas grow" if model == shadow_model else RIGHT
    await start_canary(client, admin_headers, percent=0, mirror_percent=100)

    for i in range(8):
        assert (await _ask(client, f"user-{i}", "general"))["role"] == "active"
        await runtime.answers.wait_for_mirrors()
    decision = await runtime.canary.evaluate()

    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["status"] == "aborted", status["decisions"][:1]
    if decision is not None:  # else the loop, woken by nothing, came first: same decision
        assert decision.verdict is Verdict.ABORT
    abort = status["decisions"][0]
    assert abort["stats"]["checks"]["abort"]["drift"] is True
    assert "mirrored general questions" in abort["reason"]
    assert status["arms"]["canary"]["requests"] == 0


async def test_a_later_correction_of_actives_answer_scores_the_pair(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    shadow_model, _ = await stage_adapter(client, admin_headers, tmp_path, "law")
    fake_engine.answer_for = lambda model, _q: RIGHT if model == shadow_model else "Lyon."
    await start_canary(client, admin_headers, percent=0, mirror_percent=100)
    body = await _ask(client, "u1")
    await runtime.answers.wait_for_mirrors()
    before = (await client.get("/canary", headers=admin_headers)).json()["canary"]

    item = {"type": "feedback", "id": "fb-1", "answer_id": body["answer_id"], "rating": "down",
            "correction": "Paris is the capital of France."}  # fmt: skip
    assert (
        await client.post("/ingest", json={"items": [item]}, headers=ADMIN_HEADERS)
    ).status_code == 202
    after = (await client.get("/canary", headers=admin_headers)).json()["canary"]

    assert before["current"]["stats"]["pairs"]["tally"]["undecided"] == 1
    assert after["current"]["stats"]["pairs"]["tally"]["wins"] == 1


class _Judge:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    async def compare(self, question: str, answer_a: str, answer_b: str) -> JudgeChoice:
        self.calls += 1
        if self.fail:
            from twinloop.errors import EngineResponseError

            raise EngineResponseError("judge down")
        return "a" if "Paris" in answer_a else "b"


async def test_differing_pairs_go_to_the_judge_in_both_orders(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
) -> None:
    await stage_adapter(client, admin_headers, tmp_path, "law")
    await start_canary(client, admin_headers, percent=0, mirror_percent=100)
    answer = await _ask(client, "u1")
    judge, failing = _Judge(), _Judge(fail=True)
    choice = runtime.canary.arm_for(user_id="u1", session_id=None)
    assert choice is not None

    for with_judge in (judge, failing):
        service = CanaryService(
            sessionmaker=runtime.sessionmaker,
            releases=runtime.releases,
            metrics=runtime.metrics,
            settings=runtime.settings.canary,
            max_rejections=runtime.settings.trainer.max_rejections,
            judge=with_judge,
        )
        for text in ("Lyon, of course.", answer["answer"]):  # the same answer: no judge
            await service.record_pair(
                choice, answer_id=answer["answer_id"], question="Capital of France?",
                domain="law", active_answer=answer["answer"], canary=Reply(text, 5.0, "stop"),
            )  # fmt: skip

    assert judge.calls == 2 and failing.calls >= 1
    await runtime.answers.wait_for_mirrors()
    judged = [p for p in await _rows(runtime, CanaryPair) if p.judge_active_first is not None]
    assert [(p.judge_active_first, p.judge_canary_first) for p in judged] == [("a", "b")]
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    tally = status["current"]["stats"]["pairs"]["tally"]
    # The user's own mirror (undecided), the judged loss, two same answers, the unjudged one.
    assert (tally["losses"], tally["ties"], tally["undecided"]) == (1, 2, 2)


async def test_mirrors_beyond_the_limit_are_skipped_and_counted() -> None:
    metrics = Metrics()
    tasks = MirrorTasks(limit=2, metrics=metrics)
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    started = [tasks.spawn(slow) for _ in range(3)]
    assert started == [True, True, False] and tasks.running == 2
    assert 'twinloop_canary_mirrors_total{outcome="busy"} 1.0' in metrics.render().decode()
    release.set()
    await tasks.wait()
    assert tasks.running == 0

    async def boom() -> None:
        raise RuntimeError("a bug")

    assert tasks.spawn(boom)
    await tasks.wait()  # logged, never raised into the event loop
    hanging = asyncio.Event()

    async def forever() -> None:
        await hanging.wait()

    tasks.spawn(forever)
    await tasks.aclose()
    assert tasks.running == 0


async def test_the_base_model_asked_by_name_is_mirrored_as_the_base_model(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    await stage_adapter(client, admin_headers, tmp_path, "law")
    await start_canary(client, admin_headers, percent=0, mirror_percent=100)
    body = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}], "user": "u9"}

    response = await client.post("/v1/chat/completions", json=body)
    await runtime.answers.wait_for_mirrors()

    assert response.status_code == 200 and response.json()["role"] == "active"
    asked = [
        (slot, b["model"]) for slot, p, b in fake_engine.requests if p.endswith("/completions")
    ]
    assert asked == [("blue", BASE_MODEL), ("green", BASE_MODEL)]
    async with runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(CanaryPair)) == 1
