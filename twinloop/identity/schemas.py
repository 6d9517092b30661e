"""Roles, the caller a request was identified as, and the shapes of the keys API."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from twinloop.timestamps import UtcDatetime

MAX_RATE_LIMIT_PER_MINUTE = 1_000_000


class Role(StrEnum):
    """What a credential may do (the table is in README's API section).

    `client`: ask (/answer, /v1) and rate the answers its own key was served. `ingest`: also
    documents and examples in its domains. `admin`: everything, held-out QA cases included.
    """

    CLIENT = "client"
    INGEST = "ingest"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """Who a request was identified as. `key_id` is None for the admin token and for the
    system's own calls (QA corrections); anonymous requests have no Caller at all."""

    role: Role
    name: str
    key_id: str | None = None
    domains: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def actor(self) -> str:
        """How the audit log and snapshots name this caller."""
        return f"key:{self.key_id}" if self.key_id is not None else self.name

    def scoped_user(self, user_id: str | None) -> str | None:
        """The end-user id as stored: under its key, so two apps' "alice" are two users and
        per-user caps count per key. The admin token's ids stay as sent."""
        if self.key_id is None or user_id is None:
            return user_id
        return f"{self.key_id}:{user_id}"


ADMIN_TOKEN_CALLER = Caller(role=Role.ADMIN, name="admin")


def system_caller(actor: str) -> Caller:
    """The system acting on its own (the trainer's QA corrections): admin rights, no key."""
    return Caller(role=Role.ADMIN, name=actor)


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="Whom it is for; shown in lists.")
    role: Role
    domains: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="`ingest` keys only: the domains it may write documents and examples into "
        "(empty: none).",
    )
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RATE_LIMIT_PER_MINUTE,
        description="Requests a minute, per gateway; unset: TWINLOOP_AUTH__DEFAULT_RATE_LIMIT_"
        "PER_MINUTE.",
    )


class KeyView(BaseModel):
    """A key as listed: everything but its secret (which is not stored)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    domains: list[str]
    rate_limit_per_minute: int
    prefix: str = Field(description="The secret's first characters, to tell keys apart.")
    created_at: UtcDatetime
    created_by: str
    revoked_at: UtcDatetime | None


class CreatedKey(KeyView):
    key: str = Field(description="The secret, shown this once: only its hash is stored.")
