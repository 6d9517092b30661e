"""The gateway's answer record is the `answers` table's row, column for column."""

from __future__ import annotations

from twinloop.db.models import Answer
from twinloop.inference.records import COLUMNS, AnswerRecord


def test_the_record_has_exactly_the_tables_columns() -> None:
    assert sorted(COLUMNS) == sorted(column.key for column in Answer.__table__.columns)


def test_a_record_has_an_id_and_a_creation_time_of_its_own() -> None:
    fields = {"route": "chat", "question": "Q?", "answer": "A.", "domain": "law",
              "slot": "blue", "model": "m", "latency_ms": 1.0}  # fmt: skip
    first, second = AnswerRecord(**fields), AnswerRecord(**fields)

    assert first.id != second.id and len(first.id) == 32
    row = first.row()
    assert row["id"] == first.id and row["created_at"] == first.created_at
    assert row["is_preview"] is False and row["cached"] is False
