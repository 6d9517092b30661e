"""The running canary as the request path needs it: one immutable object, replaced whole."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from twinloop.canary.assignment import Arm
from twinloop.settings import Slot


@dataclass(frozen=True)
class CanaryState:
    id: str
    snapshot_id: str
    baseline_snapshot_id: str
    percent: float
    salt: str
    # When `percent` applies; until then `previous_percent`, or no split at all (None). Every
    # gateway reads the same row and the same clock, so all switch at once (`split_delay_s`).
    percent_from: datetime
    previous_percent: float | None = None
    mirror_percent: float = 0.0

    def percent_at(self, now: datetime) -> float | None:
        """The share of users on the canary at `now`; None while the split has not begun."""
        return self.percent if now >= self.percent_from else self.previous_percent


@dataclass(frozen=True)
class ArmChoice:
    """The arm one request was given, and the slot that serves it."""

    canary_id: str
    arm: Arm
    sticky: bool
    slot: Slot
