"""API keys and callers: make, list and revoke keys; tell who a request comes from.

A request's bearer is the admin token, an API key, or nothing. The key is found by the
SHA-256 of the secret (see `ApiKey`), checked for revocation on every request (so a revoked
key stops at once on every gateway) and charged one token of its rate limit. What a route
does with a missing or bad credential is the route's contract:

- `client` (/answer, /v1): open unless `auth.require_client_key`; an unknown or revoked
  bearer is treated as no credential (counted, never a 403 that tells a guess from a key).
- `caller` (/ingest): a valid credential, else 401.
- `admin` (operators' routes): the admin token or an admin key; 401 without a valid
  credential, 403 for a key of another role.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.base import utcnow
from twinloop.db.models import ApiKey, AuditEntry
from twinloop.db.session import SessionMaker
from twinloop.errors import InvalidRequestError, NotFoundError
from twinloop.identity import repository
from twinloop.identity.errors import AuthenticationError, PermissionDeniedError, RateLimitedError
from twinloop.identity.rate_limit import RateLimiter
from twinloop.identity.schemas import (
    ADMIN_TOKEN_CALLER,
    Caller,
    CreatedKey,
    CreateKeyRequest,
    KeyView,
    Role,
)
from twinloop.metrics import Metrics

KEY_PREFIX = "tl_"
SECRET_BYTES = 32
SHOWN_CHARS = 8  # of the secret, after "tl_": enough to tell keys apart, useless to guess


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IdentityService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        admin_token: str,
        metrics: Metrics,
        domains: Sequence[str],
        default_rate_limit_per_minute: int,
        require_client_key: bool = False,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._admin_token = admin_token.encode()
        self._metrics = metrics
        self._domains = list(domains)
        self._default_rate = default_rate_limit_per_minute
        self._require_client_key = require_client_key
        self._limiter = limiter or RateLimiter()

    # -- who is calling -----------------------------------------------------------------

    async def client(self, token: str | None, *, route: str) -> Caller | None:
        """The caller of /answer and /v1: None for an anonymous one (or one whose bearer is
        not valid), unless keys are required there."""
        if self._require_client_key:
            return await self.caller(token, route=route)
        if token is None:
            return None
        try:
            return await self._identify(token, route=route)
        except AuthenticationError:
            return None  # counted in _identify; answered as anonymous

    async def caller(self, token: str | None, *, route: str) -> Caller:
        """A valid credential, else AuthenticationError (401)."""
        if token is None:
            self._count_failure(route, "missing")
            raise AuthenticationError(
                "this route needs a credential: send `Authorization: Bearer <API key>`"
            )
        return await self._identify(token, route=route)

    async def admin(self, token: str | None, *, route: str) -> Caller:
        """The admin token or an admin key; 401 without a valid credential, 403 with a key of
        another role."""
        caller = await self.caller(token, route=route)
        if not caller.is_admin:
            self.refuse(route, f"{route} needs the admin role; this key's role is {caller.role}")
        return caller

    def refuse(self, route: str, reason: str) -> None:
        """Count a refusal by role and raise PermissionDeniedError (403) with `reason`."""
        self._count_failure(route, "forbidden")
        raise PermissionDeniedError(reason)

    async def _identify(self, token: str, *, route: str) -> Caller:
        if hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN_TOKEN_CALLER
        async with self._sessionmaker.begin() as session:
            key = await repository.by_hash(session, hash_secret(token))
        if key is None:
            self._count_failure(route, "invalid")
            raise AuthenticationError("the credential is not valid")
        if key.revoked_at is not None:
            self._count_failure(route, "revoked")
            raise AuthenticationError(f"API key {key.prefix}… was revoked")
        role = Role(key.role)
        try:
            self._limiter.take(key.id, per_minute=key.rate_limit_per_minute)
        except RateLimitedError:
            self._metrics.rate_limited.labels(role.value).inc()
            raise
        return Caller(role=role, name=key.name, key_id=key.id, domains=frozenset(key.domains))

    def _count_failure(self, route: str, reason: str) -> None:
        self._metrics.auth_failures.labels(route, reason).inc()

    # -- keys -----------------------------------------------------------------------------

    async def create(self, request: CreateKeyRequest, *, actor: str) -> CreatedKey:
        """A new key; its secret is in the answer and nowhere else."""
        unknown = sorted(set(request.domains) - set(self._domains))
        if unknown:
            known = ", ".join(self._domains)
            raise InvalidRequestError(f"unknown domains {unknown}; known: {known}")
        if request.domains and request.role is not Role.INGEST:
            raise InvalidRequestError(
                f"only an ingest key has domains (a {request.role} key writes no documents)"
            )
        secret = KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        key = ApiKey(
            name=request.name,
            role=request.role.value,
            domains=sorted(set(request.domains)),
            rate_limit_per_minute=request.rate_limit_per_minute or self._default_rate,
            prefix=secret[: len(KEY_PREFIX) + SHOWN_CHARS],
            key_sha256=hash_secret(secret),
            created_by=actor,
        )
        async with self._sessionmaker.begin() as session:
            await repository.add(session, key)
            await self._audit(session, actor, "key.create", key)
            view = KeyView.model_validate(key)
        return CreatedKey(**view.model_dump(), key=secret)

    async def list_keys(self) -> list[KeyView]:
        async with self._sessionmaker.begin() as session:
            return [KeyView.model_validate(k) for k in await repository.all_keys(session)]

    async def revoke(self, key_id: str, *, actor: str) -> KeyView:
        """Revoke a key (again: no change); every gateway refuses it from the next request."""
        async with self._sessionmaker.begin() as session:
            key = await repository.get(session, key_id)
            if key is None:
                raise NotFoundError(f"no API key {key_id!r}")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                await self._audit(session, actor, "key.revoke", key)
            view = KeyView.model_validate(key)
        self._limiter.forget(key_id)
        return view

    async def _audit(self, session: AsyncSession, actor: str, action: str, key: ApiKey) -> None:
        await repository.add(
            session,
            AuditEntry(
                actor=actor,
                action=action,
                target=key.id,
                details={"name": key.name, "role": key.role, "domains": key.domains},
            ),
        )
