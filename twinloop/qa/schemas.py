"""What a QA run reports (`POST /qa`, `GET /qa/{id}`, `/status`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CategoryReport(BaseModel):
    category: str
    heldout: int = Field(description="Held-out cases: the only ones the gate reads.")
    train: int = Field(description="Training-split cases: the only ones corrections come from.")
    score: float | None = Field(description="Held-out share judged correct (with retrieval).")
    active_score: float | None = Field(description="Active's score on the same cases.")
    hallucinations: int
    without_retrieval: float | None = Field(
        description="Held-out score with every case asked without retrieval: what the weights "
        "(base model and adapter) know on their own."
    )
    retrieval_gain: float | None = Field(
        description="score - without_retrieval: the part of the score retrieval contributes."
    )


class Agreement(BaseModel):
    agreed: int
    total: int
    rate: float | None


class FailedCase(BaseModel):
    key: str
    category: str
    split: str
    question: str
    expected: str
    answer: str
    label: str
    reason: str


class QaReport(BaseModel):
    id: str
    snapshot_id: str
    slot: str
    role: str
    suite_version: str
    training_run_id: str | None
    round: int | None
    baseline_run_id: str | None
    baseline_snapshot_id: str | None
    status: str
    passed: bool | None
    overall: float | None
    active_overall: float | None
    hallucination_rate: float | None
    active_hallucination_rate: float | None
    reasons: list[str]
    regressed: list[str]
    below_floor: list[str]
    categories: list[CategoryReport]
    judge: str
    judge_agreement: dict[str, Agreement] = Field(
        description="Per category: how often the judge agreed with users' thumbs on answers "
        "that got feedback."
    )
    failures: list[FailedCase]
    seconds: float
    created_at: datetime | None = None
    error: str | None = None


class QaSummary(BaseModel):
    """The latest gated QA run, as `/status` shows it."""

    id: str
    snapshot_id: str
    training_run_id: str | None
    passed: bool | None
    overall: float | None
    active_overall: float | None
    reasons: list[str]
    split_sizes: dict[str, dict[str, int]]
    category_scores: dict[str, float | None]
    judge_agreement: dict[str, Agreement]
    created_at: datetime | None
