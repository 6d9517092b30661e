"""What the API takes and shows of adapter versions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from twinloop.timestamps import UtcDatetime


class AdapterView(BaseModel):
    """One registered adapter version. Its folder path stays server-side."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    domain: str
    name: str
    base_model: str
    sha256: str
    parent_id: str | None
    grown_from_id: str | None = None
    """The adapter whose weights it started from (a continual cycle); None: the base model."""
    training_run_id: str | None
    metrics: dict[str, Any]
    tainted: bool
    tainted_reason: str | None = None
    created_at: UtcDatetime


class RegisterAdapterRequest(BaseModel):
    """Register a PEFT LoRA adapter folder that the server can read."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The adapter folder on the server (PEFT `save_pretrained`).")
    domain: str
    parent_id: str | None = Field(default=None, description="The adapter version it refines.")
    training_run_id: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
