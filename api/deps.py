"""Request dependencies as `Annotated` aliases; tests replace them with dependency_overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary.service import CanaryService
from twinloop.identity.schemas import Caller
from twinloop.identity.service import IdentityService
from twinloop.inference.readiness import ReadinessService
from twinloop.inference.service import AnswerService
from twinloop.ingest.service import IngestService
from twinloop.metrics import Metrics
from twinloop.mining.service import MiningService
from twinloop.operations.admin import ReleaseAdmin
from twinloop.qa.service import QaService
from twinloop.registry.service import AdapterRegistry
from twinloop.runtime import Runtime
from twinloop.training.cycles import TrainingCycles

T = TypeVar("T")


# Dependencies are `async def` though they only read: FastAPI runs a plain `def` one in its
# thread pool, a thread hop per dependency per request (a dozen on /v1/chat/completions,
# the gateway's largest CPU cost after the answer's commit in bench/gateway_overhead.py).
# The services are read off the request, not through `RuntimeDep`: FastAPI solves every
# nested dependency in a call of its own, even one it has cached.
def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return _runtime(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    async with runtime.sessionmaker.begin() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _service(read: Callable[[Runtime], T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency that reads one of the runtime's services off the request."""

    async def dependency(request: Request) -> T:
        return read(_runtime(request))

    return dependency


ReleaseAdminDep = Annotated[ReleaseAdmin, Depends(_service(lambda r: r.release_admin))]
RegistryDep = Annotated[AdapterRegistry, Depends(_service(lambda r: r.registry))]
IngestDep = Annotated[IngestService, Depends(_service(lambda r: r.ingest))]
TrainingDep = Annotated[TrainingCycles, Depends(_service(lambda r: r.training))]
QaDep = Annotated[QaService, Depends(_service(lambda r: r.qa))]
CanaryDep = Annotated[CanaryService, Depends(_service(lambda r: r.canary))]
MiningDep = Annotated[MiningService, Depends(_service(lambda r: r.mining))]
AnswersDep = Annotated[AnswerService, Depends(_service(lambda r: r.answers))]
ReadinessDep = Annotated[ReadinessService, Depends(_service(lambda r: r.readiness))]
MetricsDep = Annotated[Metrics, Depends(_service(lambda r: r.metrics))]
IdentityDep = Annotated[IdentityService, Depends(_service(lambda r: r.identity))]

_bearer = HTTPBearer(auto_error=False)
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


def _route(request: Request) -> str:
    """The route's path template (`/keys/{key_id}`), the label of auth metrics."""
    path = getattr(request.scope.get("route"), "path", None)
    # Not `getattr(..., request.url.path)`: that builds the URL on every request (~4% of a
    # /v1 request's CPU in bench/gateway_overhead.py) to throw it away.
    return str(path) if path is not None else request.url.path


async def client_caller(request: Request, credentials: CredentialsDep) -> Caller | None:
    """/answer and /v1: the caller, or None for an anonymous one (see IdentityService.client)."""
    return await _runtime(request).identity.client(_token(credentials), route=_route(request))


async def require_caller(request: Request, credentials: CredentialsDep) -> Caller:
    """Any valid credential; 401 without one."""
    return await _runtime(request).identity.caller(_token(credentials), route=_route(request))


async def require_admin_caller(request: Request, credentials: CredentialsDep) -> Caller:
    """The admin token or an admin key: 401 without a valid credential, 403 for another role."""
    return await _runtime(request).identity.admin(_token(credentials), route=_route(request))


async def require_admin(caller: Annotated[Caller, Depends(require_admin_caller)]) -> str:
    """The admin's name for the audit log (`admin`, or `key:<id>` for an admin key)."""
    return caller.actor


ClientCallerDep = Annotated[Caller | None, Depends(client_caller)]
CallerDep = Annotated[Caller, Depends(require_caller)]
AdminDep = Annotated[str, Depends(require_admin)]
