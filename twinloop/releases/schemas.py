"""Shapes of release administration, shared by the service and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from twinloop.qa.schemas import QaSummary
from twinloop.training.schemas import CycleView


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000, description="Kept in the audit log.")
    generation: int | None = Field(
        default=None,
        description="Refuse (409) unless the release is still at this generation.",
    )


class SwapRequest(ChangeRequest):
    force: bool = Field(
        default=False,
        description="Swap in a Shadow snapshot that the QA gate rejected (otherwise 409).",
    )


class RollbackRequest(ChangeRequest):
    snapshot_id: str | None = Field(
        default=None, description="Snapshot to make active; default the previous active one."
    )


class CreateSnapshotRequest(ChangeRequest):
    adapters: dict[str, str | None] = Field(
        description="domain -> adapter id, or null for the base model. Domains not named keep "
        "the active snapshot's adapter."
    )


class ProposeRulesRequest(ChangeRequest):
    rules: dict[str, Any] = Field(
        description="Router rules: {version, fallback, domains: {name: {exemplars, threshold, "
        "priority}}}; see twinloop/routing/data/default_rules.json."
    )


class ProposalView(BaseModel):
    rules_version: int
    accuracy: float
    baseline_rules_version: int
    baseline_accuracy: float
    snapshot_id: str


class SnapshotView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    base_model: str
    adapters: dict[str, str | None]
    rag_versions: dict[str, int]
    router_rules_version: int | None
    parent_id: str | None
    created_by: str
    reason: str
    created_at: datetime


class SlotStatus(BaseModel):
    slot: str
    role: str
    snapshot_id: str
    adapters: dict[str, str]
    rag_versions: dict[str, int]
    router_rules_version: int | None
    engine_healthy: bool
    engine_models: list[str]
    missing_adapters: list[str]
    inflight: int


class TaintedAdapter(BaseModel):
    """An adapter that learned from an item since deleted; `serving_slots` still serve it."""

    id: str
    name: str
    domain: str
    reason: str | None
    serving_slots: list[str]


class ReleaseStatus(BaseModel):
    generation: int
    active_slot: str
    shadow_slot: str
    slots: list[SlotStatus]
    tainted_adapters: list[TaintedAdapter] = Field(default_factory=list)
    latest_training_cycle: CycleView | None = None
    latest_qa: QaSummary | None = Field(
        default=None,
        description="The latest QA run on Shadow: gate decision and reasons, split sizes, "
        "scores, and how often the judge agreed with users.",
    )


class ReleaseView(BaseModel):
    generation: int
    active_slot: str
    active_snapshot_id: str
    shadow_snapshot_id: str
    took_ms: float = Field(description="Time in the gateway, from the request to the flip.")
