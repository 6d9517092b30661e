"""Models and migrations agree, on SQLite and on the PostgreSQL the machine runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.db import migrate

pytestmark = pytest.mark.integration


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'check.db'}"
    migrate.upgrade(url)
    migrate.check(url)  # raises when autogenerate would find a difference


def test_postgres_migrations_match_the_models(postgres_database: str) -> None:
    migrate.upgrade(postgres_database)
    migrate.check(postgres_database)


def test_postgres_downgrade_and_upgrade_again(postgres_database: str) -> None:
    migrate.upgrade(postgres_database)
    migrate.downgrade(postgres_database, "base")
    migrate.upgrade(postgres_database)
    migrate.check(postgres_database)
