"""Several gateways on one PostgreSQL database run one canary: a canary started through one
splits users alike on all of them (the same sticky arms, starting at the same moment, so
no user flips between gateways), they count into the same per-arm figures, an abort or a
promotion through one reaches the others within a second, and of two gateways ending or
starting a canary at once exactly one does.

Three in-process gateways, each with its own connection pool, release watcher and canary
loop (at the default refresh_s and split_delay_s); nothing is stubbed but the engines
(`FakeEngine`), the router and the document index. The canary loops only read: a test
evaluates through one gateway's runtime when it wants a decision.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.integration.conftest import PG_ADMIN
from tests.unit.api.canary_steps import stage_adapter, start_canary
from twinloop.canary import endings as canary_endings
from twinloop.canary import repository as canary_repository
from twinloop.canary import service as canary_service
from twinloop.canary.assignment import Arm, assign
from twinloop.canary.decision import Decision, Verdict
from twinloop.db.base import utcnow
from twinloop.db.models import AuditEntry, Canary, CanaryDecision, Release
from twinloop.runtime import Runtime
from twinloop.settings import CanarySettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.gateway import in_process_gateway_runtime

pytestmark = pytest.mark.integration

USERS = [f"user-{i}" for i in range(12)]
# The bound the docs give for a change through one gateway to reach the others.
FOLLOW_S = 1.0
Gateway = tuple[httpx.AsyncClient, Runtime]


@dataclass(frozen=True)
class Served:
    gateway: int
    user: str
    role: str
    snapshot_id: str
    begun: datetime
    ended: datetime


@pytest.fixture
def settings(pg_settings: Settings) -> Settings:
    # Default refresh and split delay; no evaluation unless a test asks for one.
    return pg_settings.model_copy(update={"canary": CanarySettings(evaluate_s=3600)})


@pytest.fixture
async def gateways(settings: Settings, pg_engines: FakeEngine) -> AsyncIterator[list[Gateway]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                in_process_gateway_runtime(settings, pg_engines.transport(), f"http://gw-{n}")
            )
            for n in range(3)
        ]


@pytest.fixture
async def staged(gateways: list[Gateway], tmp_path: Any) -> str:
    """A fake law adapter staged to Shadow through the first gateway; the snapshot's id."""
    client, _ = gateways[0]
    return (await stage_adapter(client, PG_ADMIN, tmp_path))[1]


def _expected_arms(settings: Settings, percent: float) -> dict[str, Arm]:
    salt = settings.canary.salt
    return {
        user: assign(percent=percent, user_id=user, session_id=None, rng=Random(0), salt=salt).arm
        for user in USERS
    }


async def _ask(gateway: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await gateway.post("/answer", json={"question": "Q?", "domain": "law",
                                                   "user_id": user})  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _serve_rounds(gateways: list[Gateway], until: datetime) -> list[Served]:
    """Every user through every gateway in turn, round after round, until `until`."""
    served = []
    while utcnow() < until:
        for user in USERS:
            for n, (client, _) in enumerate(gateways):
                begun = utcnow()
                body = await _ask(client, user)
                served.append(Served(n, user, body["role"], body["snapshot_id"], begun, utcnow()))
    return served


async def _within(what: str, check: Callable[[], Any], seconds: float = FOLLOW_S) -> None:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"{what} took over {seconds} s"
        await asyncio.sleep(0.02)


async def _split_started(gateways: list[Gateway], user: str) -> None:
    """Wait until every gateway serves `user`, a canary user, on the canary."""
    for client, _ in gateways:

        async def on_canary(client: httpx.AsyncClient = client) -> bool:
            return (await _ask(client, user))["role"] == "canary"

        await _within("the split", on_canary, seconds=5.0)


async def _canary_view(gateway: httpx.AsyncClient) -> dict[str, Any]:
    response = await gateway.get("/canary", headers=PG_ADMIN)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()["canary"]
    return view


async def _records(runtime: Runtime) -> tuple[list[str], list[str], int, int]:
    """(canary audit actions, stored decisions, running canaries, latest release generation)."""
    async with runtime.sessionmaker() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.action.like("canary.%"))
                .order_by(AuditEntry.created_at)
            )
        ).all()
        decisions = (await session.scalars(select(CanaryDecision.decision))).all()
        running = await session.scalar(
            select(func.count()).select_from(Canary).where(Canary.status == "running")
        )
        generation = await session.scalar(select(func.max(Release.generation)))
    return list(actions), list(decisions), running or 0, generation or 0


def _counted(gateways: list[Gateway], family: str, label: str) -> list[float]:
    """Each gateway's count of `family` (a counter) with `label` as its one label's value."""
    return [
        sum(
            sample.value
            for metric in runtime.metrics.registry.collect()
            if metric.name == family
            for sample in metric.samples
            if sample.name.endswith("_total") and label in sample.labels.values()
        )
        for _, runtime in gateways
    ]


def _decide_always(monkeypatch: pytest.MonkeyPatch, verdict: Verdict, **hooks: Any) -> None:
    """Every evaluation decides `verdict`; `before` runs first (in decide's worker thread)."""
    before = hooks.get("before", lambda: None)

    def decide(*args: Any, **kwargs: Any) -> Decision:
        before()
        return Decision(verdict, f"{verdict.value}: decided by the test", {})

    monkeypatch.setattr(canary_service, "decide", decide)


async def test_a_canary_started_through_one_gateway_splits_every_user_alike_on_all(
    gateways: list[Gateway], staged: str, settings: Settings
) -> None:
    started = await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    split_from = datetime.fromisoformat(started["percent_from"])
    expected = _expected_arms(settings, 50)
    assert set(expected.values()) == {Arm.ACTIVE, Arm.CANARY}

    served = await _serve_rounds(gateways, until=split_from + timedelta(seconds=1.5))

    # Before `percent_from` nobody is split, after it everyone is, on every gateway alike.
    assert split_from - datetime.fromisoformat(started["started_at"]) == timedelta(seconds=1)
    for s in served:
        if s.role == "canary":
            assert s.ended >= split_from, f"gateway {s.gateway} split before the others"
            assert s.snapshot_id == staged
        if s.begun > split_from:
            assert s.role == expected[s.user].value, s
    assert {s.gateway for s in served if s.role == "canary"} == {0, 1, 2}
    # So a user, asked through all three in turn, moves to the canary once and never back.
    for user in USERS:
        roles = [s.role for s in served if s.user == user]
        first = roles.index("canary") if "canary" in roles else len(roles)
        assert set(roles[first:]) <= {"canary"}, (user, roles)
    # One set of per-arm figures, whichever gateway is asked.
    views = [await _canary_view(client) for client, _ in gateways]
    assert views[0]["arms"] == views[1]["arms"] == views[2]["arms"]
    assert views[0]["arms"]["canary"]["requests"] == sum(s.role == "canary" for s in served)
    assert views[0]["arms"]["active"]["requests"] > 0


async def test_an_abort_through_one_gateway_reaches_the_others_within_a_second(
    gateways: list[Gateway], staged: str, settings: Settings
) -> None:
    await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    user = next(u for u, arm in _expected_arms(settings, 50).items() if arm is Arm.CANARY)
    await _split_started(gateways, user)

    aborted = await gateways[1][0].post("/canary/abort", json={"reason": "stop"}, headers=PG_ADMIN)

    assert aborted.status_code == 200, aborted.text
    for client, _ in gateways:

        async def back_on_active(client: httpx.AsyncClient = client) -> bool:
            return (await _ask(client, user))["role"] == "active"

        await _within("the abort", back_on_active)
    for client, _ in gateways:
        assert (await _canary_view(client))["status"] == "aborted"


async def test_a_promotion_decided_on_one_gateway_reaches_the_others_within_a_second(
    gateways: list[Gateway], staged: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    arms = _expected_arms(settings, 50)
    await _split_started(gateways, next(u for u, arm in arms.items() if arm is Arm.CANARY))
    _decide_always(monkeypatch, Verdict.PROMOTE)

    decision = await gateways[2][1].canary.evaluate()

    assert decision is not None and decision.verdict is Verdict.PROMOTE
    active_user = next(u for u, arm in arms.items() if arm is Arm.ACTIVE)
    for client, _ in gateways:

        async def promoted(client: httpx.AsyncClient = client) -> bool:
            body = await _ask(client, active_user)
            return bool(body["role"] == "active" and body["snapshot_id"] == staged)

        await _within("the promotion", promoted)
    actions, decisions, running, _ = await _records(gateways[0][1])
    assert (actions.count("canary.promoted"), decisions, running) == (1, ["promote"], 0)


async def test_two_gateways_starting_a_canary_at_once_start_one(
    gateways: list[Gateway], staged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both past the check for a running canary before either writes one: the real race.
    both = asyncio.Barrier(2)
    checked = canary_repository.cycle_awaiting

    async def both_checked(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(10):
            await both.wait()
        return await checked(*args, **kwargs)

    monkeypatch.setattr(canary_repository, "cycle_awaiting", both_checked)

    body = {"percent": 10}
    responses = await asyncio.gather(
        *(client.post("/canary", json=body, headers=PG_ADMIN) for client, _ in gateways[:2])
    )

    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    won = next(r for r in responses if r.status_code == 200).json()
    lost = next(r for r in responses if r.status_code == 409).json()
    assert lost["error"] == "ReleaseConflictError"
    assert f"canary {won['id']} of snapshot {staged} was started meanwhile" in lost["detail"]
    _, _, running, _ = await _records(gateways[0][1])
    assert running == 1
    assert sorted(_counted(gateways, "twinloop_canary_races", "start")) == [0, 0, 1]
    for client, _ in gateways:
        assert (await _canary_view(client))["id"] == won["id"]


async def test_an_abort_while_another_gateway_decides_to_promote_wins_and_nothing_swaps(
    gateways: list[Gateway], staged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    _, _, _, generation = await _records(gateways[0][1])
    deciding, decided = threading.Event(), threading.Event()

    def hold_the_decision() -> None:
        deciding.set()
        assert decided.wait(10)

    _decide_always(monkeypatch, Verdict.PROMOTE, before=hold_the_decision)
    evaluation = asyncio.create_task(gateways[1][1].canary.evaluate())
    assert await asyncio.to_thread(deciding.wait, 10)

    aborted = await gateways[0][0].post("/canary/abort", json={"reason": "no"}, headers=PG_ADMIN)
    decided.set()
    await evaluation

    assert aborted.status_code == 200, aborted.text
    actions, decisions, running, now = await _records(gateways[0][1])
    assert (now, running) == (generation, 0), "the other gateway swapped in an aborted canary"
    assert actions == ["canary.start", "canary.aborted"]
    assert decisions == ["abort"]
    view = await _canary_view(gateways[1][0])
    assert (view["status"], view["baseline_snapshot_id"]) == (
        "aborted",
        started["baseline_snapshot_id"],
    )


async def test_an_abort_during_another_gateways_promotion_is_refused_until_it_swapped(
    gateways: list[Gateway], staged: str, pg_engines: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    _, _, _, generation = await _records(gateways[0][1])
    _decide_always(monkeypatch, Verdict.PROMOTE)
    engine_check = pg_engines.hold("/health")  # the swap waits at its check of Shadow's engine
    checks = len(pg_engines.calls("/health"))
    evaluation = asyncio.create_task(gateways[1][1].canary.evaluate())

    async def swapping() -> bool:
        claimed = (await _canary_view(gateways[2][0]))["status"] == "promoted"
        return claimed and len(pg_engines.calls("/health")) > checks

    await _within("the promotion's swap", swapping, seconds=10)
    refused = await gateways[0][0].post("/canary/abort", json={"reason": "no"}, headers=PG_ADMIN)
    engine_check.set()
    await evaluation

    assert (refused.status_code, refused.json()["error"]) == (409, "ReleaseConflictError")
    assert "is being promoted (its swap is under way)" in refused.json()["detail"]
    _, _, _, swapped = await _records(gateways[0][1])
    assert swapped == generation + 1
    # Now an abort through the first gateway (which reads the swap first) rolls it back.
    first = gateways[0][1]
    aborted = await gateways[0][0].post("/canary/abort", json={"reason": "no"}, headers=PG_ADMIN)
    assert aborted.status_code == 200, aborted.text
    actions, _, _, rolled_back = await _records(first)
    assert actions == ["canary.start", "canary.promoted", "canary.aborted"]
    assert rolled_back == swapped + 1
    state = first.releases.state
    assert state.serving(state.active_slot).snapshot_id == started["baseline_snapshot_id"]


@pytest.mark.parametrize("verdict", [Verdict.PROMOTE, Verdict.ABORT, Verdict.INCONCLUSIVE])
async def test_two_gateways_deciding_at_once_end_the_canary_once(
    gateways: list[Gateway], staged: str, monkeypatch: pytest.MonkeyPatch, verdict: Verdict
) -> None:
    await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    _, _, _, generation = await _records(gateways[0][1])
    both = threading.Barrier(2, timeout=10)  # both decided before either acts
    _decide_always(monkeypatch, verdict, before=both.wait)

    decided = await asyncio.gather(*(runtime.canary.evaluate() for _, runtime in gateways[:2]))

    assert [d.verdict if d else None for d in decided] == [verdict, verdict]
    ended = {Verdict.PROMOTE: "promoted", Verdict.ABORT: "aborted"}.get(verdict, "inconclusive")
    actions, decisions, running, now = await _records(gateways[0][1])
    assert actions == ["canary.start", f"canary.{ended}"]
    assert (decisions, running) == ([verdict.value], 0)
    assert now == generation + (1 if verdict is Verdict.PROMOTE else 0)
    assert sorted(_counted(gateways, "twinloop_canary_races", "end")) == [0, 0, 1]
    swapped = _counted(gateways, "twinloop_canary_promotions", "swapped")
    assert sum(swapped) == (1 if verdict is Verdict.PROMOTE else 0)


async def test_a_promotion_swapped_by_a_gateway_that_stopped_is_recorded_by_another(
    gateways: list[Gateway], staged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    _, _, _, generation = await _records(gateways[0][1])
    _decide_always(monkeypatch, Verdict.PROMOTE)
    record = canary_repository.record_promotion
    calls = 0

    async def stopped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the process ends between the swap and its record
            raise SystemExit("killed")
        return await record(*args, **kwargs)

    monkeypatch.setattr(canary_repository, "record_promotion", stopped)
    with pytest.raises(SystemExit):
        await gateways[1][1].canary.evaluate()
    view = await _canary_view(gateways[0][0])
    assert (view["status"], view["ended_at"]) == ("promoted", None)

    await gateways[2][1].canary.evaluate()  # another gateway's loop, with no canary running

    actions, decisions, running, now = await _records(gateways[0][1])
    assert (now, decisions, running) == (generation + 1, ["promote"], 0)
    assert actions == ["canary.start", "canary.promoted"]
    assert (await _canary_view(gateways[0][0]))["ended_at"] is not None
    assert _counted(gateways, "twinloop_canary_promotions", "recorded") == [0, 0, 1]


async def test_a_promotion_claimed_by_a_gateway_that_stopped_before_swapping_runs_again(
    gateways: list[Gateway], staged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await start_canary(gateways[0][0], PG_ADMIN, percent=50)
    _, _, _, generation = await _records(gateways[0][1])
    _decide_always(monkeypatch, Verdict.PROMOTE)
    stopping = gateways[1][1]

    async def killed(**kwargs: Any) -> None:  # the process ends before the swap is written
        raise SystemExit("killed")

    monkeypatch.setattr(stopping.releases, "swap", killed)
    with pytest.raises(SystemExit):
        await stopping.canary.evaluate()
    healer = gateways[2][1].canary
    await healer.evaluate()  # a fresh claim may be a swap under way: left alone
    assert (await _canary_view(gateways[0][0]))["status"] == "promoted"
    monkeypatch.setattr(canary_endings, "CLAIM_TIMEOUT_S", 0.0)

    await healer.evaluate()

    view = await _canary_view(gateways[0][0])
    assert (view["id"], view["status"], view["ended_at"]) == (started["id"], "running", None)
    assert datetime.fromisoformat(view["percent_from"]) > utcnow()  # splits again, together
    actions, decisions, running, now = await _records(gateways[0][1])
    assert (now, decisions, running) == (generation, ["promote"], 1)
    assert actions == ["canary.start", "canary.resume"]
    assert _counted(gateways, "twinloop_canary_promotions", "resumed") == [0, 0, 1]
