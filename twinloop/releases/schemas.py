"""Shapes of release administration (requests and views), shared by operations and the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from twinloop.timestamps import UtcDatetime


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000, description="Kept in the audit log.")
    generation: int | None = Field(
        default=None,
        description="Refuse (409) unless the release is still at this generation.",
    )


class ReleaseChangeRequest(BaseModel):
    """A swap or rollback: it names the release generation it changes, so two operators (or
    gateways) changing the release at once cannot undo each other."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000, description="Kept in the audit log.")
    generation: Annotated[int, Field(ge=1)] | Literal["latest"] = Field(
        description="Required. The release generation this change is meant for (`generation` "
        "in /status and in every release change's answer); refused (409) when the release "
        'is no longer at it. `"latest"`: the generation in force when the request arrives — '
        "still refused (409) if another change lands before this one is written; one that "
        "arrives after another has landed applies on top of it, so to be sure of not undoing "
        "someone's change, send the number you saw.",
    )


class SwapRequest(ReleaseChangeRequest):
    force: bool = Field(
        default=False,
        description="Swap in a Shadow snapshot that the QA gate rejected (otherwise 409).",
    )


class RollbackRequest(ReleaseChangeRequest):
    snapshot_id: str | None = Field(
        default=None,
        description="Snapshot to make active; default the previous active one (skipping any "
        "that a rollback left, so rolling back twice goes further back, never forward).",
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
    created_at: UtcDatetime


class ReleaseView(BaseModel):
    generation: int
    active_slot: str
    active_snapshot_id: str
    shadow_snapshot_id: str
    took_ms: float = Field(description="Time in the gateway, from the request to the flip.")
