"""Models and migrations agree, on SQLite and on the PostgreSQL the machine runs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from twinloop.db import migrate

pytestmark = pytest.mark.integration

POSTGRES_ADMIN_URL = os.environ.get(
    "TWINLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'check.db'}"
    migrate.upgrade(url)
    migrate.check(url)  # raises when autogenerate would find a difference


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL, dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"twinloop_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        message = f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}: {e.orig}"
        if os.environ.get("CI"):  # CI has a PostgreSQL: a missing one is a failure, not a skip
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("+psycopg", "+asyncpg")
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgres_migrations_match_the_models(postgres_database: str) -> None:
    migrate.upgrade(postgres_database)
    migrate.check(postgres_database)


def test_postgres_downgrade_and_upgrade_again(postgres_database: str) -> None:
    migrate.upgrade(postgres_database)
    migrate.downgrade(postgres_database, "base")
    migrate.upgrade(postgres_database)
    migrate.check(postgres_database)
