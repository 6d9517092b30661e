"""The errors of identifying a caller: no credential, not allowed, too many requests."""

from __future__ import annotations

import math

from twinloop.errors import TwinloopError


class AuthenticationError(TwinloopError):
    """No credential, or one that is not (or no longer) valid."""

    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class PermissionDeniedError(TwinloopError):
    """A valid credential whose role may not do this; the message names what and why."""

    status_code = 403


class RateLimitedError(TwinloopError):
    """The key spent its rate limit; `Retry-After` says when the next request is let through."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}
