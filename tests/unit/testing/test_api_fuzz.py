"""The fuzz runner finds what it is for: an undocumented status, a body off its schema, a
route that raises, an undocumented content type; and stays quiet on a conforming app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from twinloop.testing.api_fuzz import fuzz_client


class Item(BaseModel):
    name: str
    size: int


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/fine", responses={404: {"description": "none"}})
    async def fine(n: int = 0) -> Item:
        if n > 5:
            raise HTTPException(404)
        return Item(name="a", size=n)

    @app.get("/undocumented")
    async def undocumented() -> Item:
        raise HTTPException(409)

    @app.get("/off-schema", response_model=None, responses={200: {"model": Item}})
    async def off_schema() -> dict[str, object]:
        return {"name": 1}

    @app.get("/raises")
    async def raises() -> Item:
        raise RuntimeError("boom")

    @app.get("/text")
    async def text() -> PlainTextResponse:
        return PlainTextResponse("hello")

    return app


@pytest.fixture
async def fuzzed() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def test_each_kind_of_nonconformance_is_reported_once(fuzzed: httpx.AsyncClient) -> None:
    app = _app()

    report = await fuzz_client(fuzzed, app.openapi(), examples=5, seed_value=1)

    assert report.operations == 5
    found = {(operation, check.split(" ")[0]) for operation, check in report.failures}
    assert found == {
        ("GET /undocumented", "Undocumented"),
        ("GET /off-schema", "Response"),
        ("GET /raises", "Unhandled"),
        ("GET /text", "Undocumented"),
    }
    assert not any(op == "GET /fine" for op, _ in report.failures)
    assert report.cases >= 5
