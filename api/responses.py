"""The error responses routes declare in the OpenAPI document, with the body they really have.

Every error the gateway answers is `ErrorBody` (api/errors.py makes it); routes name the
statuses they can answer with `responses=errors(...)`, so a generated client knows each
one and its shape. FastAPI's own 422 shape (`HTTPValidationError`) never appears: every
route that validates anything declares 422 as `ErrorBody`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. `messages.0.role`.")
    message: str


class ErrorBody(BaseModel):
    """`{"error": type, "detail": message}`: the body of every error the gateway answers."""

    error: str = Field(
        description="The error's type, e.g. `ValidationError`, `NotFoundError`, "
        "`PayloadTooLargeError`, `EngineUnavailableError`."
    )
    detail: str = Field(description="What went wrong, for a person; names the limit or field.")
    fields: list[FieldProblem] | None = Field(
        default=None, description="`ValidationError` only: each field and its problem."
    )
    rule: str | None = Field(
        default=None,
        description="`UnsafeInputError` only: the safety layer's input-screen rule that refused "
        "the request (e.g. `override_instructions`, `prompt_leak`, `chat_template_tokens`).",
    )


_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "No valid credential was sent (none, or an unknown or revoked one).",
    403: "The credential's role may not do this; `detail` says what and why.",
    404: "What the request names does not exist.",
    409: "The request conflicts with the current state (it changed, or forbids this).",
    413: "The request is over a size limit; `detail` names the limit and its setting.",
    422: "A field is missing, unknown or out of bounds; `detail` names it.",
    429: "Too many requests; retry after `Retry-After` seconds.",
    502: "The engine answered with an error, or staging on it failed.",
    503: "The engine, the knowledge store or the database is unavailable or busy; "
    "retry after `Retry-After` seconds when it is sent.",
    504: "The engine took longer than its timeout.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}

# Statuses that come together. Every operator route reads or writes the database. An API
# key is charged its rate limit on every route (429); the admin token is not.
ADMIN = (401, 403, 429, 503)
# /answer and /v1: 401 only with auth.require_client_key; a key over its limit is 429.
CLIENT = (401, 429)
BODY = (400, 413, 422)
ENGINE = (502, 503, 504)


# /answer and /v1: the safety layer's input screen refuses with a 422 too.
SCREENED = {
    422: "A field is missing, unknown or out of bounds (`ValidationError`; `detail` names it), "
    "or the safety layer's input screen refused the text (`UnsafeInputError`; `rule` names "
    "the rule, `detail` where it matched)."
}


def errors(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer with these error statuses (`descriptions`:
    the route's own words for some of them)."""
    own = descriptions or {}
    return {
        status: {
            "model": ErrorBody,
            "description": own.get(status, _DESCRIPTIONS[status]),
            **({"headers": _RETRY_AFTER} if status in (429, 503) else {}),
        }
        for status in sorted(set(statuses))
    }
