"""What a QA run reports (`POST /qa`, `GET /qa/{id}`, `/status`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from twinloop.timestamps import UtcDatetime


class PairedComparison(BaseModel):
    """Shadow against Active on the same held-out cases (the gate's paired test)."""

    cases: int
    losses: int = Field(description="Cases Active got right and Shadow did not.")
    gains: int = Field(description="Cases Shadow got right and Active did not.")
    drop: float = Field(description="(losses - gains) / cases.")
    drop_lower_bound: float = Field(description="Lower confidence bound on the drop.")
    p_value: float = Field(description="Exact one-sided McNemar test: losses exceed gains.")
    tolerance: float
    confidence: float
    regressed: bool = Field(description="The lower bound is above the tolerance.")


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
    comparison: PairedComparison | None = Field(
        default=None, description="The paired test against Active; None without a baseline."
    )
    floor: float | None = Field(
        default=None,
        description="The floor that applied; None when Active itself is below the configured "
        "floor (the category is then judged against Active alone) or without a baseline.",
    )


class Agreement(BaseModel):
    agreed: int
    total: int
    rate: float | None


class FailedCase(BaseModel):
    key: str
    category: str
    domain: str | None = None
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
    hallucination_comparison: PairedComparison | None = Field(
        default=None,
        description="Hallucinations against Active, paired over the unique held-out cases.",
    )
    judge: str
    judge_agreement: dict[str, Agreement] = Field(
        description="Per category: how often the judge agreed with users' thumbs on answers "
        "that got feedback."
    )
    failures: list[FailedCase]
    seconds: float
    created_at: UtcDatetime | None = None
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
    created_at: UtcDatetime | None
