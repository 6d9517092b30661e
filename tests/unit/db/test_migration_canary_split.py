"""Migration 0013 keeps one running canary (the newest, which every gateway followed) and
gives every canary the moment its share applies (its start: it split at once)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from twinloop.db import migrate

INSERT_SNAPSHOT = text(
    "INSERT INTO snapshots (id, base_model, adapters, rag_versions, created_by, reason,"
    " created_at) VALUES (:id, 'base', '{}', '{}', 'test', 'test', CURRENT_TIMESTAMP)"
)
INSERT_CANARY = text(
    "INSERT INTO canaries (id, snapshot_id, baseline_snapshot_id, percent, mirror_percent,"
    " min_requests, max_duration_s, salt, status, started_at, started_by)"
    " VALUES (:id, 's2', 's1', 10, 0, 200, 3600, 'salt', :status, :started, 'admin')"
)


def test_only_the_newest_running_canary_keeps_running(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", "0012")
    db = create_engine(f"sqlite:///{path}")
    rows = [("old", "running", "2026-12-01 10:00:00"), ("new", "running", "2026-12-01 10:00:01"),
            ("done", "promoted", "2026-11-30 09:00:00")]  # fmt: skip
    with db.begin() as conn:
        for snapshot in ("s1", "s2"):
            conn.execute(INSERT_SNAPSHOT, {"id": snapshot})
        for id_, status, started in rows:
            conn.execute(INSERT_CANARY, {"id": id_, "status": status, "started": started})

    migrate.upgrade(f"sqlite+aiosqlite:///{path}")

    with db.connect() as conn:
        found = conn.execute(
            text("SELECT id, status, reason IS NOT NULL, percent_from = started_at,"
                 " previous_percent FROM canaries ORDER BY id")
        ).all()  # fmt: skip
    db.dispose()
    assert [tuple(row) for row in found] == [
        ("done", "promoted", 0, 1, None),
        ("new", "running", 0, 1, None),
        ("old", "aborted", 1, 1, None),
    ]
