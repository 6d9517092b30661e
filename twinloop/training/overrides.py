"""An admin's per-cycle training override: other hyper-parameters for one cycle only.

`POST /train {"overrides": {...}, "reason": ...}` records them on the cycle (and in the
audit log); the trainer reads them back when the cycle trains, so a resumed cycle trains
with what was asked, and every other cycle keeps the settings. What it is for: trying a
learning rate or step count on real data without restarting the trainer, and showing that
the gate stops a bad update (`twinloop demo` over-trains on purpose: a high learning rate
and no KL guard). Nothing here can weaken the gate: QA still runs and judges the result
(the override may spend fewer correction rounds, never more than `qa.max_rounds`), and a
rejected cycle's Shadow is never promoted.

The bounds are wide enough to break a model on purpose, narrow enough that a typo (a
learning rate of 3 instead of 3e-3, a step budget of 10^6) is refused with a 422 rather
than occupying the trainer for hours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.training import AdapterTrainingConfig


class TrainingOverrides(BaseModel):
    """Training settings for one cycle; unset fields keep `trainer.*` / `qa.max_rounds`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float | None = Field(
        default=None, gt=0, le=0.1, description="AdamW learning rate (trainer.learning_rate)."
    )
    kl_weight: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Weight of the KL guard toward the base model; 0 turns it off "
        "(trainer.kl_weight).",
    )
    epochs: int | None = Field(
        default=None, ge=1, le=64, description="Passes over the examples (trainer.epochs)."
    )
    step_budget: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Steps at which repeated passes stop (trainer.step_budget).",
    )
    preference: bool | None = Field(
        default=None,
        description="Train the cycle's preference pairs with DPO after SFT "
        "(trainer.preference): bench/learning.py compares SFT alone with SFT + DPO.",
    )
    continual: bool | None = Field(
        default=None,
        description="Grow each domain's adapter from the one Active serves (trainer.continual): "
        "bench/learning.py compares it with training from the base.",
    )
    max_rounds: int | None = Field(
        default=None,
        ge=1,
        description="QA rounds this cycle gets, at most qa.max_rounds (a correction round "
        "retrains with these overrides again).",
    )

    def set_fields(self) -> dict[str, Any]:
        """Only what was set: what the cycle records and reports."""
        return self.model_dump(exclude_none=True)

    def training_fields(self) -> dict[str, Any]:
        """The set fields of the training loop's config (not the QA rounds, nor the cycle's
        choices of pairs and starting adapter)."""
        cycle_level = {"max_rounds", "preference", "continual"}
        return {k: v for k, v in self.set_fields().items() if k not in cycle_level}

    def apply(self, config: AdapterTrainingConfig) -> AdapterTrainingConfig:
        """`config` with the set training fields replaced."""
        return dataclasses.replace(config, **self.training_fields())


def rounds_for(overrides: dict[str, Any], configured: int) -> int:
    """QA rounds a cycle with `overrides` (as recorded) gets: fewer than configured if asked."""
    asked = overrides.get("max_rounds")
    return min(configured, int(asked)) if asked else configured
