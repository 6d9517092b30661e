"""What the mining API returns and takes: proposals with their evidence, passes, reviews."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from twinloop.timestamps import UtcDatetime


class MinedView(BaseModel):
    """One mined proposal: the signal, its evidence, where it stands and what it teaches."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rule: str = Field(description="retry | regenerate | negative_followup | abandoned")
    state: str = Field(description="proposed | agreed | accepted | rejected | quarantined")
    source: str = Field(description="Who: the (key-scoped) user id, else key and session.")
    domain: str
    answer_id: str = Field(description="The answer the signal rejects.")
    later_answer_id: str | None = Field(
        description="The answer that showed it: the retry, regenerate or follow-up."
    )
    question: str
    rejected_answer: str
    chosen_answer: str | None = Field(description="The candidate correction, if any.")
    chosen_from: str | None = Field(description="later_answer | followup | review")
    similarity: float | None = Field(description="Of the two questions (retry, regenerate).")
    gap_s: float | None = Field(description="Seconds between the two answers.")
    evidence: dict[str, Any]
    screen_rule: str | None = Field(description="The screen's rule that quarantined it.")
    reason: str | None
    example_id: str | None = Field(description="The training example it became, once trainable.")
    example_status: str | None = Field(
        default=None, description="That example's status: pending, accepted, quarantined, …"
    )
    reviewed_by: str | None
    reviewed_at: UtcDatetime | None
    created_at: UtcDatetime


class MiningRunView(BaseModel):
    """One pass of the miner over the answer log."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    trigger: str
    scanned_from: UtcDatetime
    scanned_until: UtcDatetime
    similarity: str
    counts: dict[str, int]
    seconds: float
    created_at: UtcDatetime


class MinedList(BaseModel):
    """`GET /mined`: the proposals (newest first), how many stand where, the last pass."""

    enabled: bool
    counts: dict[str, dict[str, int]] = Field(description="state -> rule -> proposals")
    last_run: MiningRunView | None
    items: list[MinedView]


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description="The right answer, replacing the proposal's chosen one (needed when it "
        "has none); screened like any correction.",
    )
    reason: str = Field(default="", max_length=2_000, description="Kept in the audit log.")


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2_000, description="Kept with the proposal.")


class MinedEvidence(BaseModel):
    """In an adapter's lineage: the mined proposal a training example came from."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rule: str
    state: str
    answer_id: str
    later_answer_id: str | None
    similarity: float | None
    gap_s: float | None
    chosen_from: str | None
    evidence: dict[str, Any]
    reviewed_by: str | None
