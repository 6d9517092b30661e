"""The running canary as the request path needs it: one immutable object, replaced whole."""

from __future__ import annotations

from dataclasses import dataclass

from twinloop.canary.assignment import Arm
from twinloop.settings import Slot


@dataclass(frozen=True)
class CanaryState:
    id: str
    snapshot_id: str
    baseline_snapshot_id: str
    percent: float
    salt: str
    mirror_percent: float = 0.0


@dataclass(frozen=True)
class ArmChoice:
    """The arm one request was given, and the slot that serves it."""

    canary_id: str
    arm: Arm
    sticky: bool
    slot: Slot
