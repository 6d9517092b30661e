"""LeanRoute: the same responses as FastAPI's own handler, for less work per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from pydantic import BaseModel

from api import lean_route
from api.app import create_app
from api.lean_route import LeanRoute, plan
from twinloop.settings import Settings


class Question(BaseModel):
    text: str
    n: int = 1


class Reply(BaseModel):
    echo: str
    caller: str
    solved: int


calls: list[str] = []


async def caller_name(request: Request) -> str:
    calls.append("caller_name")
    return request.headers.get("x-caller", "nobody")


async def greeting(name: Annotated[str, Depends(caller_name)]) -> str:
    return f"hello {name}"


async def session() -> AsyncIterator[str]:
    yield "session"


def _app() -> FastAPI:
    router = APIRouter(route_class=LeanRoute)

    @router.post("/ask")
    async def ask(
        body: Question,
        name: Annotated[str, Depends(caller_name)],
        greet: Annotated[str, Depends(greeting)],
    ) -> Reply:
        return Reply(echo=body.text * body.n, caller=greet, solved=len(calls))

    @router.post("/with-query")
    async def with_query(body: Question, q: int = 0) -> Reply:
        return Reply(echo=body.text, caller=str(q), solved=0)

    @router.post("/with-session")
    async def with_session(body: Question, s: Annotated[str, Depends(session)]) -> Reply:
        return Reply(echo=body.text, caller=s, solved=0)

    @router.post("/embedded")
    async def embedded(body: Annotated[Question, Body(embed=True)]) -> Reply:
        return Reply(echo=body.text, caller="", solved=0)

    app = FastAPI()
    app.include_router(router)
    return app


def _route(app: FastAPI, path: str) -> LeanRoute:
    route = next(r for r in app.routes if getattr(r, "path", None) == path)
    assert isinstance(route, LeanRoute)
    return route


def test_only_a_json_body_and_request_only_dependencies_qualify() -> None:
    app = _app()
    assert plan(_route(app, "/ask").dependant) is not None
    for path in ("/with-query", "/with-session", "/embedded"):
        assert plan(_route(app, path).dependant) is None, path


def test_the_gateways_answering_routes_are_lean() -> None:
    app = create_app(Settings())
    for path in ("/answer", "/v1/chat/completions"):
        assert plan(_route(app, path).dependant) is not None, path


async def _post(app: FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, **kwargs)


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    calls.clear()


async def test_a_lean_request_reads_as_fastapis_and_solves_each_dependency_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    solved: list[str] = []
    solve = lean_route._solve

    async def counted(dependency: Any, request: Request, cache: dict[Any, Any]) -> Any:
        solved.append(dependency.call.__name__)
        return await solve(dependency, request, cache)

    monkeypatch.setattr(lean_route, "_solve", counted)
    app = _app()
    lean = await _post(app, "/ask", json={"text": "ab", "n": 2}, headers={"x-caller": "jo"})
    assert solved == ["caller_name", "greeting", "caller_name"]  # by LeanRoute
    assert calls == ["caller_name"]  # asked for twice, solved once

    calls.clear()
    solved.clear()
    app.dependency_overrides[session] = session  # any override: FastAPI's own handler
    standard = await _post(app, "/ask", json={"text": "ab", "n": 2}, headers={"x-caller": "jo"})
    assert solved == []

    assert lean.status_code == standard.status_code == 200
    assert lean.headers["content-type"] == standard.headers["content-type"]
    assert lean.json() == standard.json() == {"echo": "abab", "caller": "hello jo", "solved": 1}


async def test_an_override_is_honoured() -> None:
    app = _app()

    async def someone(request: Request) -> str:
        return "override"

    app.dependency_overrides[caller_name] = someone
    response = await _post(app, "/ask", json={"text": "a"})
    assert response.json()["caller"] == "hello override"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"text": 3}', {"content-type": "application/json"}),  # does not validate
        (b'{"text": "a"', {"content-type": "application/json"}),  # not JSON
        (b'{"text": "a"}', {"content-type": "text/plain"}),  # not declared JSON
        (b'{"text": "a"}', {}),  # no content type
    ],
)
async def test_a_body_the_model_refuses_gets_fastapis_own_error(
    content: bytes, headers: dict[str, str]
) -> None:
    lean = await _post(_app(), "/ask", content=content, headers=headers)
    standard_app = _app()
    standard_app.dependency_overrides[session] = session
    standard = await _post(standard_app, "/ask", content=content, headers=headers)

    assert lean.status_code == standard.status_code == 422
    assert lean.json() == standard.json()
