"""Request ids: every log line of a request carries its id, and the id leaves with it."""

from __future__ import annotations

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.logging import RequestIdMiddleware


async def _context(request: Request) -> JSONResponse:
    return JSONResponse(structlog.contextvars.get_contextvars())


def _client() -> httpx.AsyncClient:
    app = RequestIdMiddleware(Starlette(routes=[Route("/context", _context)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_request_id_is_bound_while_the_request_runs_and_echoed() -> None:
    async with _client() as client:
        response = await client.get("/context", headers={"x-request-id": "abc123"})
    assert response.json() == {"request_id": "abc123"}
    assert response.headers["x-request-id"] == "abc123"


async def test_a_made_id_is_bound_and_echoed() -> None:
    async with _client() as client:
        response = await client.get("/context")
    made = response.headers["x-request-id"]
    assert len(made) == 32
    assert response.json() == {"request_id": made}


async def test_the_binding_is_undone_after_the_request_keeping_what_was_bound_before() -> None:
    structlog.contextvars.bind_contextvars(request_id="outer", user="u1")
    try:
        async with _client() as client:
            inner = await client.get("/context", headers={"x-request-id": "inner"})
        assert inner.json() == {"request_id": "inner", "user": "u1"}
        assert structlog.contextvars.get_contextvars() == {"request_id": "outer", "user": "u1"}
    finally:
        structlog.contextvars.clear_contextvars()
    async with _client() as client:
        await client.get("/context")
    assert structlog.contextvars.get_contextvars() == {}
