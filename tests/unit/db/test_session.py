"""SQLite's pragmas on every connection: WAL, foreign keys, the configured fsync policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from twinloop.db.session import Synchronous, create_engine

FULL, NORMAL = 2, 1  # PRAGMA synchronous reads back as a number


@pytest.mark.parametrize(("policy", "expected"), [("FULL", FULL), ("NORMAL", NORMAL)])
async def test_sqlite_connections_get_wal_and_the_fsync_policy(
    tmp_path: Path, policy: Synchronous, expected: int
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", sqlite_synchronous=policy)
    try:
        async with engine.connect() as conn:
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await engine.dispose()

    assert (synchronous, journal, foreign_keys) == (expected, "wal", 1)


async def test_full_is_the_default(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == FULL
    finally:
        await engine.dispose()
