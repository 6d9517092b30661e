"""What every step of a cycle works with, and how a step says the cycle ends there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import SessionMaker
from twinloop.mining.service import MiningService
from twinloop.registry.service import AdapterRegistry
from twinloop.releases.service import ReleaseController
from twinloop.states import CycleState
from twinloop.training.metrics import TrainerMetrics
from twinloop.training.protocols import AdapterTrainer, FactSink, ProgressCallback, QaGate

ACTOR = "trainer"


@dataclass(frozen=True, kw_only=True)
class CycleContext:
    """The trainer's services and settings, shared by every step of every cycle."""

    sessionmaker: SessionMaker
    trainer: AdapterTrainer
    registry: AdapterRegistry
    releases: ReleaseController
    metrics: TrainerMetrics
    domains: tuple[str, ...]
    work_dir: Path
    replay_ratio: float
    cleaning: CleaningConfig
    qa: QaGate | None
    facts: FactSink | None
    max_rounds: int
    phrasings: int
    weak_factor: int
    max_rejections: int
    miner: MiningService | None
    preference: bool  # DPO on the cycle's pairs after SFT
    preference_heldout_fraction: float
    continual: bool = False
    """Grow each domain's adapter from the one Active serves (`twinloop.training.starts`)."""


@dataclass(frozen=True)
class Ending:
    """The cycle ends in `state` (recorded with `error`); see `steps.finish`."""

    state: CycleState
    error: str | None = None


# A step of a cycle: does its work, commits the next state or returns how the cycle ends.
Step = Callable[[CycleContext, str, ProgressCallback | None], Awaitable[Ending | None]]


def of_round(timings: dict[str, float], qa_rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Step timings of a correction round carry its number (`train.2`); the first's do not."""
    if not qa_rounds:
        return timings
    return {f"{step}.{len(qa_rounds) + 1}": seconds for step, seconds in timings.items()}
