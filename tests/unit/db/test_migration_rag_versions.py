"""Migration 0010 carries the RAG versions taken before it into `rag_versions`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from twinloop.db import migrate

INSERT_DOCUMENT = text(
    "INSERT INTO documents (id, external_id, domain, source, content_sha256, text, chunk_count,"
    " added_in_version, removed_in_version, created_at)"
    " VALUES (:id, :doc, :domain, 's', 'x', 't', 1, :added, :removed, CURRENT_TIMESTAMP)"
)


def test_the_newest_version_of_each_domain_is_kept_as_staged(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", "0009")
    db = create_engine(f"sqlite:///{path}")
    rows = [("d1", "law", 1, 3), ("d1", "law", 3, None), ("d2", "law", 2, None),
            ("m1", "med", 1, None)]  # fmt: skip
    with db.begin() as conn:
        for n, (doc, domain, added, removed) in enumerate(rows):
            conn.execute(
                INSERT_DOCUMENT,
                {"id": f"id{n}", "doc": doc, "domain": domain, "added": added, "removed": removed},
            )

    migrate.upgrade(f"sqlite+aiosqlite:///{path}")

    with db.connect() as conn:
        kept = conn.execute(
            text("SELECT domain, version, state FROM rag_versions ORDER BY domain")
        ).all()
    db.dispose()
    assert [tuple(row) for row in kept] == [("law", 3, "staged"), ("med", 1, "staged")]
