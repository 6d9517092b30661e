"""What /ingest takes and answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ITEMS = 100
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 20_000
# Documents whose id starts so are taught facts (a correction's, QA's): the system's own.
FACT_PREFIX = "fact:"


class DocumentItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["document"]
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    domain: str | None = Field(default=None, description="Required unless deleting.")
    text: str | None = Field(default=None, description="Required unless deleting.")
    source: str | None = Field(default=None, max_length=1024)
    deleted: bool = False


class HeldOut(BaseModel):
    """Paraphrases of the taught question, held out for QA: never trained, only tested."""

    model_config = ConfigDict(extra="forbid")

    paraphrases: list[Annotated[str, Field(min_length=1, max_length=2000)]] = Field(
        min_length=1, max_length=10
    )
    accept: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=10,
        description="Strings a right answer contains (case-insensitive); empty: the judge "
        "compares with the taught answer.",
    )


class FeedbackItem(BaseModel):
    """A user's verdict on a served answer; a thumbs-down with a correction teaches."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["feedback"]
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    answer_id: str | None = Field(default=None, description="Required unless deleting.")
    rating: Literal["up", "down"] | None = Field(
        default=None, description="Required unless deleting."
    )
    correction: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    comment: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    heldout: HeldOut | None = Field(
        default=None, description="QA cases for the corrected fact (with a correction only)."
    )
    deleted: bool = False


class ExampleItem(BaseModel):
    """A question and the answer the model should give."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["example"]
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    domain: str | None = Field(default=None, description="Required unless deleting.")
    question: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    answer: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    heldout: HeldOut | None = Field(default=None, description="QA cases for this fact.")
    deleted: bool = False


IngestItem = Annotated[DocumentItem | FeedbackItem | ExampleItem, Field(discriminator="type")]


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[IngestItem] = Field(
        min_length=1, max_length=MAX_ITEMS, description=f"At most {MAX_ITEMS} items."
    )


class ItemResult(BaseModel):
    id: str
    type: str
    status: Literal[
        "added", "updated", "unchanged", "deleted", "not_found", "rejected", "quarantined"
    ] = Field(
        description="`quarantined`: stored (so it can be deleted by id), but the screen stopped "
        "it: it is not trained on and is no fact document; `detail` names the rule."
    )
    training_example_id: str | None = Field(
        default=None, description="The training example a feedback item or example became."
    )
    domain: str | None = None
    rag_version: int | None = None
    chunks: int | None = None
    tainted_adapters: list[str] | None = Field(
        default=None, description="Adapters that had learned from a deleted item, now tainted."
    )
    detail: str | None = None


Staging = Literal["staged", "pending"]


class IngestResponse(BaseModel):
    items: list[ItemResult]
    shadow_snapshot_id: str | None = Field(
        description="The shadow snapshot that now sees the changes; null when nothing changed "
        "or staging is pending."
    )
    staging: Staging | None = Field(
        default=None,
        description="`staged`: Shadow sees the stored changes. `pending`: they are stored, but "
        "staging them failed (`staging_error` says why); a replay with the same "
        "Idempotency-Key, the next ingest or the next training cycle's snapshot stages them. "
        "null: nothing to stage.",
    )
    staging_error: str | None = Field(default=None, description="Why staging is pending.")
