"""What the cycle runner needs from outside it, and the values it exchanges with them.

An adapter trainer (PEFT in production, a fake in unit tests), the QA gate and a sink for
fact documents; `twinloop.trainer.daemon` wires the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.preference import PreferencePair
from twinloop.qa.corrections import Correction
from twinloop.qa.schemas import QaReport
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.replay import ReplayItem

# (domain, step, total) as an adapter trains; called from the training thread.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StartingAdapter:
    """A registered adapter a continual adapter grows from: a local copy and its sha256."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class TrainRequest:
    domain: str
    examples: Sequence[ReplayItem]  # new items and the domain's replay, trained with SFT
    out_dir: Path
    pairs: Sequence[PreferencePair] = ()  # trained with DPO after SFT
    heldout_pairs: Sequence[PreferencePair] = ()  # never trained on: they measure DPO
    grow_from: StartingAdapter | None = None  # None: a fresh LoRA on the base model


@dataclass(frozen=True)
class TrainedAdapter:
    path: Path
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, Any]
    preference: dict[str, Any] | None = None  # the DPO stage's report, if it ran


class AdapterTrainer(Protocol):
    """Trains a cycle's adapters in one pass; blocking, so the runner calls it from a thread.

    Every adapter of the pass is guarded by the same `guard` (the base model's answers to the
    general prompts and to the QA suites' training-split questions, every domain's included),
    so each touched domain's own suite is part of what its adapter is kept close on.
    `overrides` (an admin's, recorded on the cycle) replace some settings for this pass only.
    """

    def train(
        self,
        requests: Sequence[TrainRequest],
        guard: Sequence[ReplayItem],
        on_step: ProgressCallback,
        overrides: TrainingOverrides | None = None,
    ) -> dict[str, TrainedAdapter]: ...

    def general_replay(self, extra_prompts: Sequence[str] = ()) -> list[ReplayItem]: ...

    def cannot_grow_from(self, folder: Path) -> str | None:
        """Why the adapter in `folder` cannot be the start of one this trainer trains (another
        LoRA shape), or None when it can. Reads the folder: call it from a thread."""
        ...


class QaGate(Protocol):
    """The QA dry run on Shadow (twinloop.qa.service.QaService)."""

    async def run(
        self, *, training_run_id: str | None = None, round_number: int | None = None
    ) -> QaReport: ...

    async def corrections(self, run_id: str, *, phrasings: int) -> list[Correction]: ...

    async def replay_questions(
        self, *, exclude: Sequence[str], only: Sequence[str] | None = None
    ) -> list[str]: ...


class FactSink(Protocol):
    """Where corrections become fact documents (twinloop.ingest.service.IngestService)."""

    async def add_facts(
        self, facts: Sequence[tuple[str, str, str]], *, actor: str
    ) -> str | None: ...

    async def remove_correction_facts(
        self, feedback_ids: Sequence[str], *, actor: str
    ) -> str | None: ...
