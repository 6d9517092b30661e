"""The canary through the admin API and the request path, against the fake engines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.unit.api.canary_steps import (
    awaiting_cycle,
    items_counted,
    learned,
    read_cycle,
    read_examples,
    stage_adapter,
    start_canary,
)
from twinloop.canary import repository as canary_repository
from twinloop.canary import service as canary_service
from twinloop.canary.assignment import Arm
from twinloop.canary.decision import Decision, Verdict
from twinloop.canary.service import CanaryService
from twinloop.canary.watcher import watch_canary
from twinloop.db.models import (
    Answer,
    CanaryArmEvent,
    CanaryDecision,
)
from twinloop.errors import (
    EngineResponseError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
)
from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine


async def _stage(client: httpx.AsyncClient, headers: dict[str, str], tmp_path: Path) -> str:
    """Register a fake law adapter and stage a snapshot with it to Shadow; its id."""
    return (await stage_adapter(client, headers, tmp_path))[1]


_start = start_canary


async def _ask(client: httpx.AsyncClient, user: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"question": "Q?", "domain": "law"}
    if user is not None:
        body["user_id"] = user
    return await client.post("/answer", json=body)


async def test_canary_routes_need_the_admin_token(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/canary"), ("POST", "/canary"), ("POST", "/canary/abort")]:
        response = await client.request(method, path)
        assert response.status_code == 401, path


async def test_nothing_staged_is_a_409_release_conflict(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/canary", json={"percent": 10}, headers=admin_headers)

    assert response.status_code == 409
    assert response.json()["error"] == "ReleaseConflictError"
    assert "nothing is staged" in response.json()["detail"]
    assert (await client.get("/canary", headers=admin_headers)).json() == {"canary": None}


async def test_a_shadow_rejected_by_qa_gets_no_canary(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await _stage(client, admin_headers, tmp_path)

    class Rejected:
        id, passed, reasons = "qa1", False, ["law dropped"]

    class Verdicts:
        async def snapshot_verdict(self, snapshot_id: str) -> Rejected:
            return Rejected()

    service = CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary,
        max_rejections=runtime.settings.trainer.max_rejections,
        verdicts=Verdicts(),
    )
    with pytest.raises(canary_service.ReleaseConflictError, match="rejected by QA run qa1"):
        await service.start(canary_service.StartCanaryRequest(percent=5), actor="admin")


async def test_canary_users_are_served_by_shadow_and_recorded_with_their_arm(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    started = await _start(client, admin_headers, percent=100, min_requests=5)

    assert (started["status"], started["snapshot_id"], started["percent"]) == (
        "running", snapshot_id, 100.0,
    )  # fmt: skip
    body = (await _ask(client, "u1")).json()
    assert (body["role"], body["slot"], body["snapshot_id"]) == ("canary", "green", snapshot_id)
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "law", "messages": [{"role": "user", "content": "Q?"}], "user": "u2"},
    )
    assert chat.json()["role"] == "canary"
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, body["answer_id"])
    assert row is not None
    assert (row.role, row.canary_id) == ("canary", started["id"])

    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["arms"]["canary"]["requests"] == 2
    assert status["arms"]["active"]["requests"] == 0
    assert status["current"]["verdict"] == "continue"
    assert 0 < status["time_left_s"] <= 3600
    assert (await client.get("/status", headers=admin_headers)).json()["canary"]["id"] == (
        started["id"]
    )
    metrics = runtime.metrics.render().decode()
    assert 'twinloop_canary_requests_total{arm="canary",sticky="true"} 2.0' in metrics
    assert "twinloop_canary_percent 100.0" in metrics


async def test_raising_the_percentage_keeps_the_users_on_the_canary(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    await _stage(client, admin_headers, tmp_path)
    first = await _start(client, admin_headers, percent=30)
    users = [f"user-{i}" for i in range(40)]
    before = {u: (await _ask(client, u)).json()["role"] for u in users}
    again = {u: (await _ask(client, u)).json()["role"] for u in users}
    assert before == again  # sticky
    assert 0 < list(before.values()).count("canary") < len(users)

    raised = await _start(client, admin_headers, percent=60)
    after = {u: (await _ask(client, u)).json()["role"] for u in users}

    assert raised["id"] == first["id"]
    assert all(after[u] == "canary" for u in users if before[u] == "canary")
    assert list(after.values()).count("canary") > list(before.values()).count("canary")


async def test_abort_sends_everyone_back_to_active(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=100)
    assert (await _ask(client, "u1")).json()["role"] == "canary"

    aborted = await client.post(
        "/canary/abort", json={"reason": "users complain"}, headers=admin_headers
    )

    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted"
    assert "users complain" in aborted.json()["reason"]
    body = (await _ask(client, "u1")).json()
    assert (body["role"], body["slot"]) == ("active", "blue")
    again = await client.post("/canary/abort", json={"reason": "again"}, headers=admin_headers)
    assert again.status_code == 409


async def test_an_abort_on_the_error_slo_is_stored_with_its_figures(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=50)
    users = [f"user-{i}" for i in range(30)]
    fake_engine.down.add("green")
    outcomes = [(await _ask(client, u)).status_code for u in users]
    assert 503 in outcomes and 200 in outcomes
    await runtime.canary.evaluate()  # the loop may have been first; then this finds none

    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["status"] == "aborted"
    assert status["arms"]["canary"]["engine_errors"] == outcomes.count(503)
    abort = status["decisions"][0]
    assert abort["decision"] == "abort" and "SLO" in abort["reason"]
    assert abort["stats"]["checks"]["abort"]["error_slo"] is True
    assert abort["stats"]["errors"]["slo"]["rejected"] is True
    metrics = runtime.metrics.render().decode()
    assert 'twinloop_canary_decisions_total{verdict="abort"} 1.0' in metrics
    assert 'twinloop_canary_arm{arm="canary",figure="error_rate"} 1.0' in metrics
    assert "twinloop_canary_percent 0.0" in metrics
    # Everyone is back on Active, which still serves the baseline.
    assert {(await _ask(client, u)).status_code for u in users} == {200}
    assert runtime.releases.state.active_slot.value == "blue"


async def test_a_promote_decision_swaps_shadow_in(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=50)
    for i in range(10):
        assert (await _ask(client, f"user-{i}")).status_code == 200
    monkeypatch.setattr(
        canary_service, "decide", lambda *a, **k: Decision(Verdict.PROMOTE, "promote: ok", {})
    )
    swaps: list[dict[str, Any]] = []
    real_swap = runtime.releases.swap

    async def swap(**kwargs: Any) -> Any:
        swaps.append(kwargs)
        return await real_swap(**kwargs)

    monkeypatch.setattr(runtime.releases, "swap", swap)
    generation = runtime.releases.state.generation

    decision = await runtime.canary.evaluate()

    assert decision is not None and decision.verdict is Verdict.PROMOTE
    # Only at the generation the counts were taken on: nothing staged meanwhile goes live.
    assert [s["expected_generation"] for s in swaps] == [generation]
    state = runtime.releases.state
    assert state.serving(state.active_slot).snapshot_id == snapshot_id
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert (status["status"], status["current"]) == ("promoted", None)
    body = (await _ask(client, "user-1")).json()
    assert (body["role"], body["snapshot_id"]) == ("active", snapshot_id)
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(CanaryDecision))).scalars().all()
    assert [r.decision for r in rows] == ["promote"]

    # An abort after the promotion restores the baseline: desired state, not only traffic.
    aborted = await client.post("/canary/abort", json={"reason": "late"}, headers=admin_headers)
    assert aborted.status_code == 200, aborted.text
    state = runtime.releases.state
    assert state.serving(state.active_slot).snapshot_id == status["baseline_snapshot_id"]


async def test_the_deadline_without_a_decision_is_inconclusive(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=100, max_duration_s=0.001)
    await _ask(client, "u1")

    decision = await runtime.canary.evaluate()

    assert decision is not None and decision.verdict is Verdict.INCONCLUSIVE
    assert "deadline" in decision.reason
    assert (await _ask(client, "u1")).json()["role"] == "active"
    assert runtime.releases.state.active_slot.value == "blue"


async def test_a_restarted_gateway_continues_the_running_canary(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await _stage(client, admin_headers, tmp_path)
    started = await _start(client, admin_headers, percent=25)
    await _ask(client, "u1")

    restarted = CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary,
        max_rejections=runtime.settings.trainer.max_rejections,
    )
    state = await restarted.load()

    assert state is not None and (state.id, state.percent) == (started["id"], 25.0)
    view = await restarted.status()
    assert (
        view is not None and view.arms["active"]["requests"] + view.arms["canary"]["requests"] == 1
    )


async def test_a_swap_outside_the_canary_ends_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=10)
    swapped = await client.post(
        "/swap", json={"reason": "by hand", "generation": "latest"}, headers=admin_headers
    )
    assert swapped.status_code == 200, swapped.text

    assert await runtime.canary.evaluate() is None

    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["status"] == "promoted"
    assert "outside the canary" in status["reason"]


async def test_previews_and_answers_without_a_canary_are_not_counted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    assert (await _ask(client, "u1")).json()["role"] == "active"  # no canary yet
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=100)
    preview = await client.post(
        "/answer", json={"question": "Q?", "domain": "law", "target": "shadow"},
        headers=admin_headers,
    )  # fmt: skip
    assert (preview.json()["preview"], preview.json()["role"]) == (True, None)
    stream = await client.post(
        "/v1/chat/completions",
        json={"model": "law", "messages": [{"role": "user", "content": "Q?"}], "stream": True},
    )
    events = [line for line in stream.text.split("\n") if line.startswith("data: {")]
    # No user id: split at random, at 100 %.
    assert {json.loads(line[len("data: ") :])["role"] for line in events} == {"canary"}

    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["arms"]["canary"]["requests"] == 1
    assert status["unsticky_requests"] == {"active": 0, "canary": 1}


async def test_a_broken_shadow_is_aborted_by_the_loop_after_a_few_failed_users(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    """Failures wake the evaluation loop (its period is 15 s): no manual evaluate here."""
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=50)
    fake_engine.down.add("green")

    failed = 0
    for i in range(60):
        failed += (await _ask(client, f"user-{i}")).status_code == 503
        await asyncio.sleep(0.02)  # the loop's turn
        if runtime.canary.state is None:
            break

    assert runtime.canary.state is None, "the loop did not abort the canary"
    assert 2 <= failed <= 4  # the error-SLO test needs 2 failures of 2; one may be in flight
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["status"] == "aborted" and "SLO" in status["reason"]


async def test_an_adapter_shadow_cannot_load_again_counts_against_the_canary(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    fake_engine: FakeEngine,
) -> None:
    """Shadow's engine lost the adapter and its stored files are gone: every canary request
    fails (not in the engine's connection, in serving), and counts to the canary arm."""
    await _stage(client, admin_headers, tmp_path)
    await _start(client, admin_headers, percent=100)
    fake_engine.loaded_adapters["green"].clear()
    shutil.rmtree(runtime.settings.data_dir / "adapters")

    failed = (await _ask(client, "u1")).status_code
    await runtime.canary.evaluate()

    assert failed >= 400
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert status["arms"]["canary"]["engine_errors"] == 1


async def test_failures_count_to_the_arm_by_kind_and_caller_errors_to_none(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await _stage(client, admin_headers, tmp_path)
    started = await _start(client, admin_headers, percent=100)
    sticky = runtime.canary.arm_for(user_id="u1", session_id=None)
    unsticky = runtime.canary.arm_for(user_id=None, session_id=None)
    assert sticky is not None and unsticky is not None
    assert (sticky.arm, sticky.sticky, unsticky.sticky) == (Arm.CANARY, True, False)

    await runtime.canary.record_failure(sticky, InvalidRequestError("prompt too long"))
    await runtime.canary.record_failure(sticky, NotFoundError("no adapter law"))
    async with runtime.sessionmaker() as session:
        assert (await session.execute(select(CanaryArmEvent))).scalars().all() == []
    await runtime.canary.record_failure(sticky, EngineTimeoutError("took over 60 s"))
    await runtime.canary.record_failure(unsticky, EngineUnavailableError("refused"))
    await runtime.canary.record_failure(sticky, EngineResponseError("500 from vLLM"))

    async with runtime.sessionmaker() as session:
        events = (await session.execute(select(CanaryArmEvent))).scalars().all()
        counts = await canary_repository.counts(session, started["id"])
    assert sorted((e.kind, e.arm, e.sticky, e.error) for e in events) == [
        ("engine_error", "canary", False, "EngineUnavailableError: refused"),
        ("engine_error", "canary", True, "EngineResponseError: 500 from vLLM"),
        ("timeout", "canary", True, "EngineTimeoutError: took over 60 s"),
    ]
    assert {e.canary_id for e in events} == {started["id"]}
    assert (counts.canary.timeouts, counts.canary.engine_errors) == (1, 2)
    assert (counts.canary.requests, counts.active.requests) == (3, 0)
    assert counts.unsticky == {Arm.ACTIVE: 0, Arm.CANARY: 1}
    metrics = runtime.metrics.render().decode()
    assert 'twinloop_canary_errors_total{arm="canary",kind="timeout"} 1.0' in metrics
    assert 'twinloop_canary_errors_total{arm="canary",kind="engine_error"} 2.0' in metrics


async def test_the_cycle_behind_the_canary_follows_it_and_records_a_rollback(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    cycle_id = await awaiting_cycle(runtime, snapshot_id)

    started = await _start(client, admin_headers, percent=10)

    assert started["cycle_id"] == cycle_id
    assert (await read_cycle(runtime, cycle_id)).state == "canary"
    await client.post("/canary/abort", json={"reason": "bad answers"}, headers=admin_headers)
    cycle = await read_cycle(runtime, cycle_id)
    assert cycle.state == "rolled_back"
    assert cycle.error is not None and "bad answers" in cycle.error


async def test_an_aborted_canary_hands_its_cycles_items_back(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    """As a QA rejection would: user items back to pending with the canary's reason and one
    more rejection, quarantined at `max_rejections`; QA-made ones retired."""
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    max_rejections = runtime.settings.trainer.max_rejections
    ids = await learned(
        runtime,
        cycle_id,
        fresh=("correction", 0),
        refused_before=("example", max_rejections - 1),
        qa_made=("qa-correction", 0),
    )
    started = await _start(client, admin_headers, percent=10)

    await client.post("/canary/abort", json={"reason": "bad answers"}, headers=admin_headers)

    reason = (
        f"cycle {cycle_id} rolled back by canary {started['id']}: aborted by admin: bad answers"
    )
    examples = await read_examples(runtime, ids)
    fresh, refused, qa_made = examples["fresh"], examples["refused_before"], examples["qa_made"]
    assert (fresh.status, fresh.rejections, fresh.reject_reason) == ("pending", 1, reason)
    assert (refused.status, refused.rejections) == ("quarantined", max_rejections)
    assert refused.reject_reason is not None and refused.reject_reason.endswith(f"last: {reason}")
    assert (qa_made.status, qa_made.rejections) == ("retired", 0)
    assert (await read_cycle(runtime, cycle_id)).state == "rolled_back"
    assert items_counted(runtime) == {
        "handed_back": 1.0, "quarantined.rejections": 1.0, "retired": 1.0}  # fmt: skip


async def test_an_abort_the_loop_decides_hands_back_with_its_reason(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    ids = await learned(runtime, cycle_id, fresh=("correction", 0))
    started = await _start(client, admin_headers, percent=10)
    monkeypatch.setattr(
        canary_service, "decide", lambda *a, **k: Decision(Verdict.ABORT, "abort: worse", {})
    )

    await runtime.canary.evaluate()

    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections, fresh.reject_reason) == (
        "pending", 1, f"cycle {cycle_id} rolled back by canary {started['id']}: abort: worse",
    )  # fmt: skip


async def test_a_promoted_canary_hands_nothing_back_until_an_abort_rolls_it_back(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    ids = await learned(runtime, cycle_id, fresh=("correction", 0), qa_made=("qa-correction", 0))
    await _start(client, admin_headers, percent=10)
    monkeypatch.setattr(
        canary_service, "decide", lambda *a, **k: Decision(Verdict.PROMOTE, "promote: ok", {})
    )

    await runtime.canary.evaluate()

    assert (await read_cycle(runtime, cycle_id)).state == "promoted"
    examples = await read_examples(runtime, ids)
    assert {(e.status, e.rejections) for e in examples.values()} == {("accepted", 0)}
    assert items_counted(runtime) == {}

    # Undone after the promotion: the cycle is rolled back, and its items go back then.
    await client.post("/canary/abort", json={"reason": "late"}, headers=admin_headers)

    assert (await read_cycle(runtime, cycle_id)).state == "rolled_back"
    examples = await read_examples(runtime, ids)
    assert (examples["fresh"].status, examples["qa_made"].status) == ("pending", "retired")
    assert items_counted(runtime) == {"handed_back": 1.0, "retired": 1.0}


async def test_an_inconclusive_canary_leaves_its_cycles_items_to_an_admin(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    cycle_id = await awaiting_cycle(runtime, snapshot_id)
    ids = await learned(runtime, cycle_id, fresh=("correction", 0))
    await _start(client, admin_headers, percent=100, max_duration_s=0.001)

    decision = await runtime.canary.evaluate()

    assert decision is not None and decision.verdict is Verdict.INCONCLUSIVE
    assert (await read_cycle(runtime, cycle_id)).state == "inconclusive"
    fresh = (await read_examples(runtime, ids))["fresh"]
    assert (fresh.status, fresh.rejections) == ("accepted", 0)
    # Nothing runs to abort: the cycle and its items wait for an admin.
    refused = await client.post("/canary/abort", json={"reason": "no"}, headers=admin_headers)
    assert refused.status_code == 409
    assert items_counted(runtime) == {}


async def test_with_auto_a_cycle_that_passed_qa_gets_its_canary_by_itself(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    snapshot_id = await _stage(client, admin_headers, tmp_path)
    auto = CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary.model_copy(update={"auto": True, "percent": 5.0}),
        max_rejections=runtime.settings.trainer.max_rejections,
    )
    assert await auto.evaluate() is None  # no cycle waits: nothing starts
    assert auto.state is None
    cycle_id = await awaiting_cycle(runtime, snapshot_id)

    await auto.evaluate()

    assert auto.state is not None and auto.state.percent == 5.0
    assert (await read_cycle(runtime, cycle_id)).state == "canary"
    status = (await client.get("/canary", headers=admin_headers)).json()["canary"]
    assert (status["snapshot_id"], status["started_by"]) == (snapshot_id, "canary")


async def test_another_gateway_follows_a_canary_started_and_aborted_here(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    other = CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=runtime.settings.canary,
        max_rejections=runtime.settings.trainer.max_rejections,
    )
    loop = asyncio.create_task(watch_canary(other, period_s=3600, refresh_s=0.02))
    try:
        await _stage(client, admin_headers, tmp_path)
        started = await _start(client, admin_headers, percent=40)
        await _until(lambda: other.state is not None)
        assert other.state is not None and other.state.id == started["id"]

        await client.post("/canary/abort", json={"reason": "stop"}, headers=admin_headers)
        await _until(lambda: other.state is None)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll: the other gateway's loop has no event to wait on."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the other gateway did not follow")


async def test_a_min_requests_beyond_any_traffic_is_422_not_a_database_overflow(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    # Found by bench/api_fuzz.py: 10**35 overflowed SQLite's INTEGER, a 500.
    await _stage(client, admin_headers, tmp_path)
    response = await client.post(
        "/canary", json={"percent": 10, "min_requests": 10**35}, headers=admin_headers
    )

    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "min_requests"
