"""What /ingest takes and answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ITEMS = 100
MAX_ID_CHARS = 128


class DocumentItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["document"]
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    domain: str | None = Field(default=None, description="Required unless deleting.")
    text: str | None = Field(default=None, description="Required unless deleting.")
    source: str | None = Field(default=None, max_length=1024)
    deleted: bool = False


IngestItem = Annotated[DocumentItem, Field(discriminator="type")]


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[IngestItem] = Field(
        min_length=1, max_length=MAX_ITEMS, description=f"At most {MAX_ITEMS} items."
    )


class ItemResult(BaseModel):
    id: str
    type: str
    status: Literal["added", "updated", "unchanged", "deleted", "not_found", "rejected"]
    domain: str | None = None
    rag_version: int | None = None
    chunks: int | None = None
    detail: str | None = None


class IngestResponse(BaseModel):
    items: list[ItemResult]
    shadow_snapshot_id: str | None = Field(
        description="The shadow snapshot that now sees the changes; null when nothing changed."
    )
