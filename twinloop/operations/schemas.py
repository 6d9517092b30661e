"""What `/status` shows: both slots, tainted adapters, the latest training cycle and QA run."""

from __future__ import annotations

from pydantic import BaseModel, Field

from twinloop.canary.schemas import CanaryView
from twinloop.inference.schemas import AnswerCacheStatus, SafetyStatus
from twinloop.qa.schemas import QaSummary
from twinloop.training.schemas import CycleView


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


class ArtifactsView(BaseModel):
    """Where adapters are stored, and how each slot's engine gets a verified copy."""

    store: str = Field(description="The adapter store: a folder, or s3://bucket/prefix.")
    backend: str = Field(description="filesystem or s3")
    slots: dict[str, dict[str, str]] = Field(
        description="Per slot, its fetch step: `local` (this process syncs `cache_dir`, which "
        "the engine reads as `engine_dir`) or `agent` (the fetch agent at `agent_url`, beside "
        "the engine)."
    )


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
    canary: CanaryView | None = Field(
        default=None,
        description="The running canary, else the latest one: arms, counts, statistics, time "
        "left and decisions so far.",
    )
    artifacts: ArtifactsView | None = None
    safety: SafetyStatus | None = Field(
        default=None,
        description="The safety layer on /answer and /v1: each screen's mode, what the "
        "screens found and did in the last 24 hours, requests blocked.",
    )
    answer_cache: AnswerCacheStatus | None = Field(
        default=None,
        description="The answer cache of the gateway process that answered: entries, hits "
        "and misses since it started (twinloop_answer_cache_* sums every worker's).",
    )
