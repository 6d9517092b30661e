"""The one declarative base every twinloop table hangs on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints let Alembic (batch mode on SQLite) alter them later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


_IDS_PER_READ = 256


def _fresh_ids() -> Iterator[str]:
    raw = bytearray(os.urandom(16 * _IDS_PER_READ))
    for start in range(0, len(raw), 16):
        raw[start + 6] = (raw[start + 6] & 0x0F) | 0x40  # version 4
        raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return iter([text[start : start + 32] for start in range(0, len(text), 32)])


_ids: Iterator[str] = iter(())


def _forget_ids() -> None:
    """In a forked child: ids read by the parent are the parent's alone."""
    global _ids
    _ids = iter(())


os.register_at_fork(after_in_child=_forget_ids)


def new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as `uuid.uuid4().hex` writes it.

    The random bytes are read 256 ids at a time: `os.urandom` gives up the GIL, and on the
    gateway's event loop each of those (two per request) let the answer writer's thread in
    mid-request. `next` on the list's iterator is atomic, so threads never share an id.
    """
    global _ids
    try:
        return next(_ids)
    except StopIteration:
        _ids = _fresh_ids()
        return next(_ids)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class IdMixin:
    """A 32-hex-char string id: portable across SQLite and PostgreSQL, safe to expose."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
