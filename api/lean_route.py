"""`LeanRoute`: FastAPI's route with the per-request machinery cut to what a hot route uses.

FastAPI solves a route's dependencies generically on every request: each parameter's kind
checked again, a values dict and an error list per dependency, the body parsed with the
standard `json` and validated through a field wrapper, the endpoint's context extracted
for error messages. On `/v1/chat/completions` over a stub engine that was ~14% of the
gateway's CPU per request (bench/gateway_overhead.py, py-spy). The hot routes need none of
it: one JSON body, and dependencies that only read the request.

So a `LeanRoute` plans, once, when it is built: if the endpoint takes one pydantic model
as its body and, besides the `Request`, only dependencies whose own parameters are the
request and more such dependencies (no query, path, header or cookie parameters, no
`yield`, no `Response` or background tasks), it calls them itself, each once per request,
with the body parsed by orjson and validated by the model. Everything else takes
FastAPI's own handler, unchanged: a route that does not qualify, a body that is not
`application/json` or does not validate (so a 422 reads exactly as FastAPI writes it),
and any request while `app.dependency_overrides` is set (tests swap dependencies there).
The OpenAPI schema is the route's as declared; errors the endpoint raises reach the same
exception handlers. The rest of the route (path matching, `response_model`
serialisation, status code) is FastAPI's.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, serialize_response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import replay_body

_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _Dependency:
    """One dependency the route solves itself: the callable and how to call it."""

    call: Callable[..., Awaitable[Any]]
    request_param: str | None
    needs: tuple[tuple[str, _Dependency], ...]
    """Its parameters that are dependencies themselves, by name."""


@dataclass(frozen=True, slots=True)
class _Plan:
    body_param: str
    body_model: type[BaseModel]
    request_param: str | None
    dependencies: tuple[tuple[str, _Dependency], ...]


def _takes_only_the_request(dependant: Dependant) -> bool:
    return not (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


def _dependency(dependant: Dependant) -> _Dependency | None:
    """How to solve `dependant`, or None when it needs more than the request."""
    call = dependant.call
    if (
        call is None
        or dependant.body_params
        or not _takes_only_the_request(dependant)
        or not dependant.is_coroutine_callable
        or dependant.is_gen_callable
        or dependant.is_async_gen_callable
    ):
        return None
    needs = _dependencies(dependant)
    if needs is None:
        return None
    return _Dependency(call, dependant.request_param_name, needs)


def _dependencies(dependant: Dependant) -> tuple[tuple[str, _Dependency], ...] | None:
    solved: list[tuple[str, _Dependency]] = []
    for sub in dependant.dependencies:
        dependency = _dependency(sub)
        if dependency is None or sub.name is None:
            return None
        solved.append((sub.name, dependency))
    return tuple(solved)


def plan(dependant: Dependant) -> _Plan | None:
    """The lean plan for a route's endpoint, or None if FastAPI must solve it."""
    if (
        dependant.call is None
        or not inspect.iscoroutinefunction(dependant.call)
        or not _takes_only_the_request(dependant)
        or len(dependant.body_params) != 1
    ):
        return None
    body = dependant.body_params[0]
    if getattr(body.field_info, "embed", False):  # `{"name": {...}}`: FastAPI unwraps it
        return None
    model = body.field_info.annotation
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        return None
    dependencies = _dependencies(dependant)
    if dependencies is None:
        return None
    return _Plan(body.name, model, dependant.request_param_name, dependencies)


async def _arguments(
    request_param: str | None,
    needs: tuple[tuple[str, _Dependency], ...],
    request: Request,
    cache: dict[Callable[..., Any], Any],
) -> dict[str, Any]:
    """The keyword arguments of a callable that takes the request and `needs`."""
    values: dict[str, Any] = {}
    if request_param is not None:
        values[request_param] = request
    for name, need in needs:
        values[name] = await _solve(need, request, cache)
    return values


async def _solve(
    dependency: _Dependency, request: Request, cache: dict[Callable[..., Any], Any]
) -> Any:
    """The dependency's value, computed once per request (FastAPI's `use_cache` default)."""
    if dependency.call in cache:
        return cache[dependency.call]
    values = await _arguments(dependency.request_param, dependency.needs, request, cache)
    value = cache[dependency.call] = await dependency.call(**values)
    return value


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type == _JSON or content_type.startswith(_JSON + ";")


class LeanRoute(APIRoute):
    """An `APIRoute` that solves a qualifying endpoint itself (see the module docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        # Another response class would need FastAPI's own encoding of the result.
        custom_response = not isinstance(self.response_class, DefaultPlaceholder)
        lean = None if custom_response else plan(self.dependant)
        if lean is not None:
            self._lean = lean
            self._standard: ASGIApp = self.app
            self.app = self._lean_app

    async def _lean_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The route as an ASGI app. Not wrapped like FastAPI's (its two exit stacks for
        `yield` dependencies, which a lean route has none of, and the exception handlers
        looked up again): what the endpoint raises reaches the same handlers, one layer
        out, in Starlette's `ExceptionMiddleware`."""
        request = Request(scope, receive, send)
        if request.app.dependency_overrides or not _is_json(request):
            await self._standard(scope, receive, send)
            return
        raw = await request.body()
        try:
            body = self._lean.body_model.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError):
            await self._standard(scope, replay_body(raw, receive), send)
            return
        lean = self._lean
        values = await _arguments(lean.request_param, lean.dependencies, request, cache={})
        values[lean.body_param] = body
        response = await self._respond(await self.endpoint(**values))
        await response(scope, receive, send)

    async def _respond(self, result: Any) -> Response:
        """The endpoint's result as FastAPI would send it (a route with a `response_model`
        and the default response class: the model's JSON, dumped by pydantic)."""
        if isinstance(result, Response):
            return result
        content = await serialize_response(
            field=self.response_field,
            response_content=result,
            include=self.response_model_include,
            exclude=self.response_model_exclude,
            by_alias=self.response_model_by_alias,
            exclude_unset=self.response_model_exclude_unset,
            exclude_defaults=self.response_model_exclude_defaults,
            exclude_none=self.response_model_exclude_none,
            dump_json=True,
        )
        status = self.status_code or 200
        if self.response_field is None:  # no model: `content` is what JSONResponse encodes
            return JSONResponse(content, status_code=status)
        return Response(content, status_code=status, media_type=_JSON)
