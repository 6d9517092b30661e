"""Two gateways' canary services on one database, with a clock the test moves: a split, and
every change of its share, applies on both at the same moment, so no user meets both arms.

The second gateway is a second `CanaryService` over the same database and release (what a
second process holds), reading the canary only when the test says it refreshes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.unit.api.canary_steps import stage_adapter
from twinloop.canary.assignment import Arm
from twinloop.canary.schemas import StartCanaryRequest
from twinloop.canary.service import CanaryService
from twinloop.releases.errors import ReleaseConflictError
from twinloop.runtime import Runtime
from twinloop.settings import CanarySettings

USERS = [f"user-{i}" for i in range(200)]
SPLIT = CanarySettings(refresh_s=0.5, split_delay_s=1.0)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _gateway(runtime: Runtime, clock: Clock) -> CanaryService:
    return CanaryService(
        sessionmaker=runtime.sessionmaker,
        releases=runtime.releases,
        metrics=runtime.metrics,
        settings=SPLIT,
        max_rejections=runtime.settings.trainer.max_rejections,
        clock=clock,
    )


def _arms(gateway: CanaryService) -> dict[str, Arm | None]:
    """Each user's arm through this gateway now (None: not split)."""
    arms = {}
    for user in USERS:
        choice = gateway.arm_for(user_id=user, session_id=None)
        arms[user] = choice.arm if choice else None
    return arms


def _on_canary(arms: dict[str, Arm | None]) -> int:
    return sum(arm is Arm.CANARY for arm in arms.values())


@pytest.fixture
async def staged(client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path) -> None:
    await stage_adapter(client, admin_headers, tmp_path)


@pytest.mark.usefixtures("staged")
async def test_the_split_starts_on_both_gateways_at_once_after_the_delay(runtime: Runtime) -> None:
    clock = Clock()
    one, two = _gateway(runtime, clock), _gateway(runtime, clock)

    started = await one.start(StartCanaryRequest(percent=50), actor="admin")

    assert started.percent_from == clock.now + timedelta(seconds=1)
    assert started.previous_percent is None
    clock.advance(0.4)  # the second gateway has not read the canary yet: neither splits
    assert set(_arms(one).values()) == set(_arms(two).values()) == {None}
    await two.load()  # its refresh, within refresh_s
    clock.advance(0.5)
    assert set(_arms(one).values()) == set(_arms(two).values()) == {None}
    clock.advance(0.1)  # percent_from: both split, alike
    assert _arms(one) == _arms(two)
    assert 60 < _on_canary(_arms(one)) < 140


@pytest.mark.usefixtures("staged")
async def test_a_new_share_applies_on_both_gateways_at_once(runtime: Runtime) -> None:
    clock = Clock()
    one, two = _gateway(runtime, clock), _gateway(runtime, clock)
    await one.start(StartCanaryRequest(percent=20), actor="admin")
    await two.load()
    clock.advance(1.0)
    at_20 = _arms(one)

    adjusted = await one.start(StartCanaryRequest(percent=60), actor="admin")

    assert (adjusted.previous_percent, adjusted.percent) == (20, 60)
    clock.advance(0.5)  # the second gateway still holds 20 %, the first applies 20 % until then
    assert _arms(one) == _arms(two) == at_20
    await two.load()
    clock.advance(0.5)
    at_60 = _arms(one)
    assert at_60 == _arms(two)
    assert _on_canary(at_60) > _on_canary(at_20)
    # Raising the share only adds users: nobody on the canary at 20 % left it.
    assert all(at_60[user] is Arm.CANARY for user, arm in at_20.items() if arm is Arm.CANARY)


@pytest.mark.usefixtures("staged")
async def test_a_second_change_of_the_share_before_the_first_applies_is_refused(
    runtime: Runtime,
) -> None:
    clock = Clock()
    one = _gateway(runtime, clock)
    await one.start(StartCanaryRequest(percent=20), actor="admin")
    clock.advance(0.5)

    with pytest.raises(ReleaseConflictError, match="change the share again after that"):
        await one.start(StartCanaryRequest(percent=30), actor="admin")

    # Other settings may change meanwhile; the share once the first change applies.
    same = await one.start(StartCanaryRequest(percent=20, min_requests=50), actor="admin")
    assert same.min_requests == 50
    clock.advance(0.5)
    assert (await one.start(StartCanaryRequest(percent=30), actor="admin")).percent == 30


async def test_the_split_delay_must_outlast_the_refresh() -> None:
    with pytest.raises(ValueError, match=r"must be above canary\.refresh_s"):
        CanarySettings(refresh_s=1.0, split_delay_s=1.0)
    assert CanarySettings(refresh_s=1.0, split_delay_s=0).split_delay_s == 0
