"""Timestamps as the API shows them: always with their zone, so valid RFC 3339 date-times.

Every time twinloop stores is UTC (`db.base.utcnow`), but SQLite keeps no zone: its
`DateTime(timezone=True)` columns come back naive, and a naive datetime serialises as
`2026-12-02T03:53:11.658449`, which OpenAPI's `date-time` (and most clients) refuse.
Response models type their timestamps `UtcDatetime`: a naive value is taken as UTC, an
aware one converted to UTC, so the same moment reads the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive `moment` is taken to be UTC already (as twinloop writes it)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
