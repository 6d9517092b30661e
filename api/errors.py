"""One place that turns errors into JSON: `{"error": type, "detail": message}`."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from twinloop.errors import TwinloopError

log = structlog.get_logger(__name__)


def install_error_handlers(app: FastAPI, *, retry_after_s: int = 1) -> None:
    @app.exception_handler(TwinloopError)
    async def twinloop_error(_: Request, exc: TwinloopError) -> JSONResponse:
        return error_response(
            exc.status_code,
            type(exc).__name__,
            exc.message,
            headers=exc.headers or None,
            **exc.extra_body,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return error_response(422, "ValidationError", detail, fields=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "HTTPError", str(exc.detail), headers=exc.headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeoutError)
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # Unreachable, restarting, or (SQLite) locked by a long writer: worth a retry. The
        # driver's text names paths and SQL, so it goes to the log only.
        log.warning("database unavailable", error=f"{type(exc).__name__}: {exc}")
        return error_response(
            503,
            "DatabaseUnavailableError",
            "the database is unavailable or busy; retry shortly",
            headers={"Retry-After": str(retry_after_s)},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=type(exc).__name__)
        return error_response(500, "InternalError", "internal error; the gateway log has details")


def error_response(
    status_code: int,
    error: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers
    )
