"""Shapes of canary administration (requests and views), shared by the service and the API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from twinloop.timestamps import UtcDatetime

# More requests per arm than any canary will see; the bound keeps it a database integer.
MAX_MIN_REQUESTS = 1_000_000_000


class CanaryStatus(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    ABORTED = "aborted"
    INCONCLUSIVE = "inconclusive"


class StartCanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: float = Field(
        ge=0,
        le=100,
        description="Share of users the canary serves. Sent while the same Shadow's canary "
        "runs, it adjusts the share: raising it keeps every user already on the canary.",
    )
    min_requests: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MIN_REQUESTS,
        description="Requests per arm before promotion; default canary.min_requests.",
    )
    max_duration_s: float | None = Field(
        default=None, gt=0, description="Deadline after which it ends inconclusive."
    )
    mirror_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Share of Active's requests also asked of Shadow in the background for "
        "the paired comparison; default canary.mirror_percent. The user gets Active's answer.",
    )
    reason: str = Field(default="", max_length=2000, description="Kept in the audit log.")


class AbortCanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="Kept with the canary.")


class DecisionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    decision: str
    reason: str
    share: float
    created_at: UtcDatetime
    stats: dict[str, Any]


class CurrentDecision(BaseModel):
    """What `decide` says on the counts right now (not stored: evaluations store theirs)."""

    verdict: str
    reason: str
    stats: dict[str, Any]


class CanaryView(BaseModel):
    id: str
    status: CanaryStatus
    snapshot_id: str = Field(description="Shadow's snapshot: what the canary arm serves.")
    baseline_snapshot_id: str = Field(description="Active's snapshot: the active arm.")
    cycle_id: str | None
    percent: float
    percent_from: UtcDatetime = Field(
        description="When `percent` applies, on every gateway at once (canary.split_delay_s "
        "after it was set)."
    )
    previous_percent: float | None = Field(
        description="The share until `percent_from`; null: nobody is split until then."
    )
    mirror_percent: float
    min_requests: int
    max_duration_s: float
    started_at: UtcDatetime
    ended_at: UtcDatetime | None
    started_by: str
    reason: str | None
    elapsed_s: float
    time_left_s: float
    arms: dict[str, dict[str, Any]] = Field(description="active and canary: counts and rates.")
    unsticky_requests: dict[str, int] = Field(
        description="Requests with neither user nor session id, split at random, per arm."
    )
    current: CurrentDecision | None = Field(
        default=None, description="The decision on the counts now, while it runs."
    )
    decisions: list[DecisionView] = Field(
        default_factory=list, description="Stored evaluations, newest first."
    )


class CanaryReport(BaseModel):
    """`GET /canary`: the running canary, else the latest one, else none."""

    canary: CanaryView | None
