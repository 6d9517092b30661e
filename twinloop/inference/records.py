"""A served answer as the answer writer stores it: one row of the `answers` table.

A plain dataclass, not the ORM's `Answer`: the gateway builds one per request and only ever
inserts it (`repository.insert_rows`), never loads or updates it, so the ORM's per-instance
bookkeeping is pure cost there (building an `Answer` and reading its row back measured
~50 us per request, a plain record and its row ~7 us). Its fields are the table's columns, by name;
`tests/unit/inference/test_records.py` keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from twinloop.db.base import new_id, utcnow


@dataclass(slots=True, kw_only=True)
class AnswerRecord:
    route: str
    question: str
    answer: str
    domain: str
    slot: str
    model: str
    latency_ms: float
    route_score: float | None = None
    snapshot_id: str | None = None
    adapter_version_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    api_key_id: str | None = None
    is_preview: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    role: str | None = None
    canary_id: str | None = None
    safety_flags: list[dict[str, Any]] | None = None
    raw_answer: str | None = None
    cached: bool = False
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)

    def row(self) -> dict[str, Any]:
        """The record as one row of an insert, column by column."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS = tuple(f.name for f in fields(AnswerRecord))
