"""What the training API returns: a cycle's state and an adapter's lineage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from twinloop.mining.schemas import MinedEvidence
from twinloop.registry.schemas import AdapterView
from twinloop.timestamps import UtcDatetime
from twinloop.training.overrides import TrainingOverrides


class CycleRequested(BaseModel):
    cycle_id: str
    state: str
    overrides: dict[str, Any] = {}


class CycleRequest(BaseModel):
    """`POST /train`'s optional body: training settings for this cycle only, and why."""

    model_config = ConfigDict(extra="forbid")

    overrides: TrainingOverrides | None = None
    reason: str = Field(default="", max_length=1000, description="Kept in the audit log.")


class CycleView(BaseModel):
    """One training cycle as `GET /train/{cycle_id}` reports it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    state: str
    trigger: str
    requested_by: str
    domains: list[str]
    step_timings: dict[str, float]
    item_counts: dict[str, int]
    progress: dict[str, Any]
    adapters: dict[str, str]
    snapshot_id: str | None
    attempts: int
    qa_rounds: list[dict[str, Any]]
    targets: dict[str, Any]
    overrides: dict[str, Any] = {}
    preference: dict[str, Any] = {}  # per domain, the DPO stage's report (preference.py)
    starts: dict[str, Any] = {}
    """Per domain, what its adapter started from: `start` (continual or base), `why`, the
    `adapter_id` grown from (or passed over) and a `reason` (twinloop.training.starts)."""
    error: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class LineageItem(BaseModel):
    """One item of a cycle: trained on (as `new` or `replay`) or quarantined with a reason.

    A mined item (`source` `mined`) carries the proposal it came from, with its evidence.
    """

    example_id: str
    external_id: str | None
    feedback_id: str | None
    source: str
    domain: str
    role: str
    question: str
    answer: str
    rejected_answer: str | None
    rule: str | None
    reason: str | None
    deleted: bool
    mined: MinedEvidence | None = None


class LineageView(BaseModel):
    """What taught an adapter: the examples it trained on and what its cycle kept out."""

    adapter: AdapterView
    grown_from: AdapterView | None = None
    """The adapter whose weights it started from (a continual cycle); None: the base model."""
    cycle: CycleView | None
    trained_on: list[LineageItem]
    quarantined: list[LineageItem]
    general_replay: dict[str, Any]
