"""Migrations that rebuild a table (SQLite batch mode) keep the rows other tables point at."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from twinloop.db import migrate


def test_upgrading_a_database_with_answers_and_their_feedback_keeps_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", "0006")
    db = create_engine(f"sqlite:///{path}")
    with db.begin() as conn:
        conn.execute(text(
            "INSERT INTO answers (id, route, question, answer, domain, slot, model, is_preview,"
            " latency_ms, created_at) VALUES ('a1', 'answer', 'q', 'a', 'law', 'blue', 'm', 0,"
            " 1.0, CURRENT_TIMESTAMP)"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO feedback (id, external_id, answer_id, rating, content_sha256, created_at)"
            " VALUES ('f1', 'fb-1', 'a1', 'up', 'x', CURRENT_TIMESTAMP)"
        ))  # fmt: skip

    migrate.upgrade(f"sqlite+aiosqlite:///{path}")  # 0007 and 0009 rebuild `answers`

    with db.connect() as conn:
        answers = conn.execute(text("SELECT id, role, api_key_id FROM answers")).all()
        feedback = conn.execute(text("SELECT answer_id FROM feedback")).all()
        broken = conn.execute(text("PRAGMA foreign_key_check")).all()
    db.dispose()
    assert [tuple(a) for a in answers] == [("a1", None, None)]
    assert [tuple(f) for f in feedback] == [("a1",)] and broken == []
