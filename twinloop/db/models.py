"""Every record that must survive a restart (see DESIGN.md, Persistence).

Ids that clients choose (feedback, examples, documents) are kept in their own
`external_id` column so that our primary keys stay uniform.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from twinloop.db.base import Base, CreatedAtMixin, IdMixin, utcnow
from twinloop.states import ItemStatus, MinedState, RagVersionState

SLOT_LEN = 8
DOMAIN_LEN = 64
EXTERNAL_ID_LEN = 128
SHA256_LEN = 64
# A keyed caller's end-user id is stored as `<api key id>:<the id it sent (at most 255)>`.
USER_ID_LEN = 320


class Answer(IdMixin, CreatedAtMixin, Base):
    """One answer served to someone, so that feedback can point at it."""

    __tablename__ = "answers"

    route: Mapped[str] = mapped_column(String(32), doc="answer | chat")
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), index=True)
    route_score: Mapped[float | None] = mapped_column(Float)
    slot: Mapped[str] = mapped_column(String(SLOT_LEN))
    snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"), index=True)
    model: Mapped[str] = mapped_column(String(255), doc="the engine's model name that served it")
    adapter_version_id: Mapped[str | None] = mapped_column(ForeignKey("adapter_versions.id"))
    user_id: Mapped[str | None] = mapped_column(
        String(USER_ID_LEN), index=True, doc="the end user; under a key, `<key id>:<user id>`"
    )
    session_id: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id"), index=True, doc="the API key it was served to; null: none"
    )
    is_preview: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="operator preview of Shadow"
    )
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(
        String(32), doc="the engine's (stop, length), or abandoned: the client dropped the stream"
    )
    role: Mapped[str | None] = mapped_column(
        String(8), doc="active | canary: the arm that served it (null for previews)"
    )
    canary_id: Mapped[str | None] = mapped_column(
        ForeignKey("canaries.id"), index=True, doc="the canary running when it was served"
    )
    safety_flags: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSON,
        doc="what the safety layer found and did: [{screen, rule, action, where, count}]; "
        "null: nothing. `answer` is what the client got (redacted when the output screen "
        "redacts)",
    )
    raw_answer: Mapped[str | None] = mapped_column(
        Text,
        doc="the answer as generated, kept only when the output screen changed it and "
        "safety.keep_raw_pii is on",
    )
    cached: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        doc="served from the answer cache (twinloop.inference.answer_cache): the same "
        "snapshot's answer to the same question, no engine call",
    )


class Feedback(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "feedback"

    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), unique=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), index=True)
    rating: Mapped[str] = mapped_column(String(8), doc="up | down")
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    deleted_at: Mapped[datetime | None]


class TrainingExample(IdMixin, CreatedAtMixin, Base):
    """A question/answer pair to learn from: sent as-is, derived from a correction, or from QA."""

    __tablename__ = "training_examples"

    external_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_LEN), unique=True)
    source: Mapped[str] = mapped_column(String(32), doc="example | correction | qa")
    feedback_id: Mapped[str | None] = mapped_column(ForeignKey("feedback.id"), index=True)
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    rejected_answer: Mapped[str | None] = mapped_column(Text, doc="for preference pairs")
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING, index=True)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    deleted_at: Mapped[datetime | None]
    heldout: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="{paraphrases, accept}: held-out QA cases for the fact this teaches"
    )
    rejections: Mapped[int] = mapped_column(
        Integer,
        default=0,
        doc="cycles that trained on it and were refused (QA gate rejection, canary rollback)",
    )


class Document(IdMixin, CreatedAtMixin, Base):
    """Metadata of one version of an ingested document; chunks live in Chroma."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("external_id", "added_in_version", "domain"),)

    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN), index=True)
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), index=True)
    source: Mapped[str | None] = mapped_column(String(1024))
    content_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    text: Mapped[str] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    added_in_version: Mapped[int] = mapped_column(Integer)
    removed_in_version: Mapped[int | None] = mapped_column(Integer)


# Where a domain has an open version (reserved or failed): at most one row per domain.
_OPEN_RAG_VERSION = text("state IN ('reserved', 'failed')")


class RagVersion(CreatedAtMixin, Base):
    """One domain's RAG version, reserved by the ingest that writes it (ingest/versions.py).

    `created_at` is when it was reserved: the writer's lease runs from then.
    """

    __tablename__ = "rag_versions"
    __table_args__ = (
        Index(
            "uq_rag_versions_open_domain",
            "domain",
            unique=True,
            sqlite_where=_OPEN_RAG_VERSION,
            postgresql_where=_OPEN_RAG_VERSION,
        ),
    )

    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(16), default=RagVersionState.RESERVED)
    actor: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AdapterVersion(IdMixin, CreatedAtMixin, Base):
    """One immutable LoRA adapter on disk, named by the sha256 of its files."""

    __tablename__ = "adapter_versions"

    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), index=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, doc="the engine's model name")
    base_model: Mapped[str] = mapped_column(String(1024))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("adapter_versions.id"))
    grown_from_id: Mapped[str | None] = mapped_column(
        ForeignKey("adapter_versions.id"),
        doc="the adapter whose weights it started from (a continual cycle); None: the base",
    )
    training_run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tainted: Mapped[bool] = mapped_column(Boolean, default=False)
    tainted_reason: Mapped[str | None] = mapped_column(Text)


class Snapshot(IdMixin, CreatedAtMixin, Base):
    """Everything a slot serves. Never updated: a change is a new snapshot."""

    __tablename__ = "snapshots"

    base_model: Mapped[str] = mapped_column(String(1024))
    adapters: Mapped[dict[str, str | None]] = mapped_column(
        JSON, default=dict, doc="domain -> adapter_versions.id or null"
    )
    rag_versions: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    router_rules_version: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    created_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)


class Release(IdMixin, CreatedAtMixin, Base):
    """Append-only: the row with the highest generation is the release in force.

    The unique generation makes two concurrent swaps collide instead of both winning.
    """

    __tablename__ = "releases"

    generation: Mapped[int] = mapped_column(Integer, unique=True)
    active_slot: Mapped[str] = mapped_column(String(SLOT_LEN))
    blue_snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    green_snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)


class TrainingRun(IdMixin, CreatedAtMixin, Base):
    """One learning cycle, persisted as a state machine so a crash can resume or abandon it."""

    __tablename__ = "training_runs"

    state: Mapped[str] = mapped_column(String(32), index=True)
    trigger: Mapped[str] = mapped_column(String(32))
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    step_timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    item_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    requested_by: Mapped[str] = mapped_column(String(255), default="trainer")
    adapters: Mapped[dict[str, str]] = mapped_column(
        JSON, default=dict, doc="domain -> adapter_versions.id registered by this cycle"
    )
    attempts: Mapped[int] = mapped_column(
        Integer, default=0, doc="how many times a trainer has started working on it"
    )
    progress: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="the running step's progress, e.g. {domain, step, total}"
    )
    owner: Mapped[str | None] = mapped_column(String(255), doc="host:pid of the trainer on it")
    qa_rounds: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, doc="one entry per QA round: qa run id, overall score, passed"
    )
    targets: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="the weak spots of the last rejected cycle it oversampled"
    )
    overrides: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="an admin's training settings for this cycle only (POST /train)"
    )
    preference: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        default=dict,
        doc="per domain, the DPO stage's report: pairs used, reward margin, held-out accuracy",
    )
    starts: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        default=dict,
        doc="domain -> what its adapter started from: {start, adapter_id, why, reason}",
    )


class TrainingRunItem(IdMixin, Base):
    """Provenance: one example a cycle trained on, replayed, or quarantined, and why.

    `question` and `answer` are the text as trained (after PII redaction), so lineage shows
    exactly what taught an adapter.
    """

    __tablename__ = "training_run_items"
    __table_args__ = (UniqueConstraint("run_id", "example_id"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id"), index=True)
    example_id: Mapped[str] = mapped_column(ForeignKey("training_examples.id"), index=True)
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    role: Mapped[str] = mapped_column(String(16), doc="new | replay | quarantined")
    rule: Mapped[str | None] = mapped_column(String(32), doc="the cleaning rule that stopped it")
    reason: Mapped[str | None] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    adapter_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("adapter_versions.id"), index=True
    )


class QaRun(IdMixin, CreatedAtMixin, Base):
    """One dry run of a benchmark suite on one slot's snapshot, with the gate's decision."""

    __tablename__ = "qa_runs"

    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"), index=True)
    slot: Mapped[str] = mapped_column(String(SLOT_LEN))
    role: Mapped[str] = mapped_column(
        String(16), default="candidate", doc="candidate (gated) | baseline (Active, cached)"
    )
    suite_version: Mapped[str] = mapped_column(String(64))
    training_run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id"))
    round: Mapped[int | None] = mapped_column(Integer, doc="the cycle's training round")
    baseline_run_id: Mapped[str | None] = mapped_column(ForeignKey("qa_runs.id"))
    status: Mapped[str] = mapped_column(String(16), doc="running | finished | failed")
    overall_score: Mapped[float | None] = mapped_column(Float)
    category_scores: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="gate reasons, split sizes, attribution, judge agreement"
    )
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None]


class QaItem(IdMixin, Base):
    """One case's answer in a QA run, and how it was judged."""

    __tablename__ = "qa_items"

    run_id: Mapped[str] = mapped_column(ForeignKey("qa_runs.id"), index=True)
    item_key: Mapped[str] = mapped_column(String(EXTERNAL_ID_LEN * 2))
    category: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    split: Mapped[str] = mapped_column(String(16), doc="train | heldout")
    question: Mapped[str] = mapped_column(Text)
    expected: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(16), doc="correct | incorrect | hallucination")
    score: Mapped[float] = mapped_column(Float)
    contexts: Mapped[int] = mapped_column(Integer, default=0, doc="retrieved chunks used")
    label_without_retrieval: Mapped[str | None] = mapped_column(
        String(16), doc="the label when asked without retrieval (only when contexts > 0)"
    )
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latency_ms: Mapped[float] = mapped_column(Float)


# At most one canary runs, whichever gateway starts it.
_RUNNING_CANARY = text("status = 'running'")


class Canary(IdMixin, Base):
    """One canary of a staged Shadow snapshot on a sticky share of live traffic."""

    __tablename__ = "canaries"
    __table_args__ = (
        Index(
            "uq_canaries_running",
            "status",
            unique=True,
            sqlite_where=_RUNNING_CANARY,
            postgresql_where=_RUNNING_CANARY,
        ),
    )

    snapshot_id: Mapped[str] = mapped_column(
        ForeignKey("snapshots.id"),
        index=True,
        doc="Shadow's staged snapshot: the canary arm; a running canary moves it to a child "
        "serving the same adapters (an ingest's) that Shadow moves to",
    )
    baseline_snapshot_id: Mapped[str] = mapped_column(
        ForeignKey("snapshots.id"), doc="Active's snapshot when it started: the active arm"
    )
    cycle_id: Mapped[str | None] = mapped_column(
        ForeignKey("training_runs.id"), doc="the training cycle that staged the snapshot"
    )
    percent: Mapped[float] = mapped_column(Float, doc="share of users on the canary arm")
    percent_from: Mapped[datetime] = mapped_column(
        default=utcnow,
        doc="when `percent` applies, on every gateway at once: canary.split_delay_s after it "
        "was written, so that each gateway has read it by then",
    )
    previous_percent: Mapped[float | None] = mapped_column(
        Float, doc="the share until `percent_from`; NULL: no split until then (a new canary)"
    )
    mirror_percent: Mapped[float] = mapped_column(Float, default=0.0)
    min_requests: Mapped[int] = mapped_column(Integer)
    max_duration_s: Mapped[float] = mapped_column(Float)
    salt: Mapped[str] = mapped_column(String(64), doc="hashed with the user's key for the arm")
    status: Mapped[str] = mapped_column(
        String(16), index=True, doc="running | promoted | aborted | inconclusive"
    )
    reason: Mapped[str | None] = mapped_column(Text, doc="why it ended")
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[datetime | None]
    started_by: Mapped[str] = mapped_column(String(255))


class CanaryArmEvent(IdMixin, CreatedAtMixin, Base):
    """A canary request that failed in the engine: it wrote no answer, yet counts to its arm."""

    __tablename__ = "canary_arm_events"

    canary_id: Mapped[str] = mapped_column(ForeignKey("canaries.id"), index=True)
    arm: Mapped[str] = mapped_column(String(8), doc="active | canary")
    kind: Mapped[str] = mapped_column(String(16), doc="engine_error | timeout")
    sticky: Mapped[bool] = mapped_column(Boolean, default=True, doc="False: neither id came")
    error: Mapped[str | None] = mapped_column(Text)


class CanaryDecision(IdMixin, CreatedAtMixin, Base):
    """One evaluation of a canary, with every figure the decision used."""

    __tablename__ = "canary_decisions"

    canary_id: Mapped[str] = mapped_column(ForeignKey("canaries.id"), index=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"), index=True)
    baseline_snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"))
    share: Mapped[float] = mapped_column(Float, doc="the canary's percent at the evaluation")
    decision: Mapped[str] = mapped_column(
        String(16), doc="continue | promote | abort | inconclusive"
    )
    reason: Mapped[str] = mapped_column(Text)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CanaryPair(IdMixin, CreatedAtMixin, Base):
    """A mirrored question: Active's answer (the user's) and the canary's, never shown.

    Active's side is its `answers` row; a later correction of that answer is its feedback.
    """

    __tablename__ = "canary_pairs"

    canary_id: Mapped[str] = mapped_column(ForeignKey("canaries.id"), index=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), index=True)
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    canary_answer: Mapped[str] = mapped_column(Text)
    canary_latency_ms: Mapped[float] = mapped_column(Float)
    canary_finish_reason: Mapped[str | None] = mapped_column(String(32))
    canary_error: Mapped[str | None] = mapped_column(Text, doc="the engine's error, if it failed")
    judge_active_first: Mapped[str | None] = mapped_column(
        String(8), doc="the LLM judge's choice with Active's answer first: a | b | tie"
    )
    judge_canary_first: Mapped[str | None] = mapped_column(String(8))


class RouterRulesVersion(CreatedAtMixin, Base):
    """One version of the router's rules; snapshots pin a version."""

    __tablename__ = "router_rules"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    accuracy: Mapped[float | None] = mapped_column(Float, doc="on the labelled routing set")
    created_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)


class IdempotencyKey(CreatedAtMixin, Base):
    """A client's `Idempotency-Key`: the same key and body replay the stored result."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(64))
    request_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditEntry(IdMixin, CreatedAtMixin, Base):
    """Who did what to the system, and why."""

    __tablename__ = "audit_log"

    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiKey(IdMixin, CreatedAtMixin, Base):
    """A client application's credential. Only the SHA-256 of the secret is kept.

    The secret is 32 random bytes (`tl_` + urlsafe base64), shown once at creation. A
    password-hashing function (bcrypt, argon2) slows down guessing a low-entropy secret; a
    256-bit random one cannot be guessed at any speed, so one fast SHA-256 suffices, and it
    lets a request find its key by an indexed lookup of the hash.
    """

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), doc="client | ingest | admin")
    domains: Mapped[list[str]] = mapped_column(
        JSON, default=list, doc="where an ingest key may write documents and examples"
    )
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer)
    prefix: Mapped[str] = mapped_column(String(16), doc="the secret's first characters, shown")
    key_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    created_by: Mapped[str] = mapped_column(String(255))
    revoked_at: Mapped[datetime | None]


class MinedSignal(IdMixin, CreatedAtMixin, Base):
    """A weak signal the miner found in the answer log, and the proposal it makes.

    The answer it rejects is `answer_id`; `later_answer_id` is the answer that showed it (the
    retry, the regenerate, the follow-up), if any. Texts are stored redacted. It teaches only
    once `agreed` or `accepted` (twinloop.mining), through the training example it made.
    """

    __tablename__ = "mined_signals"
    # A rule fires at most once per answer, so a pass that reads an answer again adds nothing.
    __table_args__ = (UniqueConstraint("answer_id", "rule"),)

    rule: Mapped[str] = mapped_column(String(32), index=True, doc="a MinedRule")
    state: Mapped[str] = mapped_column(String(16), default=MinedState.PROPOSED, index=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), doc="the rejected answer")
    later_answer_id: Mapped[str | None] = mapped_column(ForeignKey("answers.id"))
    source: Mapped[str] = mapped_column(
        String(USER_ID_LEN + 64), index=True, doc="who: the scoped user id, else key/session"
    )
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    question: Mapped[str] = mapped_column(Text)
    rejected_answer: Mapped[str] = mapped_column(Text)
    chosen_answer: Mapped[str | None] = mapped_column(Text, doc="the candidate correction")
    chosen_from: Mapped[str | None] = mapped_column(
        String(16), doc="later_answer | followup | review: where the chosen answer came from"
    )
    similarity: Mapped[float | None] = mapped_column(Float, doc="of the two questions")
    gap_s: Mapped[float | None] = mapped_column(Float, doc="seconds between the two answers")
    evidence: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="what the rule saw, and the agreement that made it trainable"
    )
    screen_rule: Mapped[str | None] = mapped_column(String(32), doc="the rule that stopped it")
    reason: Mapped[str | None] = mapped_column(Text, doc="why quarantined, or the review's")
    example_id: Mapped[str | None] = mapped_column(
        ForeignKey("training_examples.id"), index=True, doc="what it teaches, once trainable"
    )
    reviewed_by: Mapped[str | None] = mapped_column(String(255))
    reviewed_at: Mapped[datetime | None]


class MiningRun(IdMixin, CreatedAtMixin, Base):
    """One pass of the miner over the answer log; the next pass reads on from `scanned_until`."""

    __tablename__ = "mining_runs"

    trigger: Mapped[str] = mapped_column(String(32), doc="cycle | schedule | cli")
    scanned_from: Mapped[datetime]
    scanned_until: Mapped[datetime]
    similarity: Mapped[str] = mapped_column(String(16), doc="embedding | lexical")
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    seconds: Mapped[float] = mapped_column(Float)
