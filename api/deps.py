"""Request dependencies as `Annotated` aliases; tests replace them with dependency_overrides."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary.service import CanaryService
from twinloop.errors import TwinloopError
from twinloop.inference.readiness import ReadinessService
from twinloop.inference.service import AnswerService
from twinloop.ingest.service import IngestService
from twinloop.metrics import Metrics
from twinloop.operations.admin import ReleaseAdmin
from twinloop.qa.service import QaService
from twinloop.registry.service import AdapterRegistry
from twinloop.runtime import Runtime
from twinloop.training.cycles import TrainingCycles


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    async with runtime.sessionmaker.begin() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_release_admin(runtime: RuntimeDep) -> ReleaseAdmin:
    return runtime.release_admin


def get_registry(runtime: RuntimeDep) -> AdapterRegistry:
    return runtime.registry


def get_ingest(runtime: RuntimeDep) -> IngestService:
    return runtime.ingest


def get_training(runtime: RuntimeDep) -> TrainingCycles:
    return runtime.training


def get_qa(runtime: RuntimeDep) -> QaService:
    return runtime.qa


def get_canary(runtime: RuntimeDep) -> CanaryService:
    return runtime.canary


CanaryDep = Annotated[CanaryService, Depends(get_canary)]
IngestDep = Annotated[IngestService, Depends(get_ingest)]
QaDep = Annotated[QaService, Depends(get_qa)]
TrainingDep = Annotated[TrainingCycles, Depends(get_training)]
ReleaseAdminDep = Annotated[ReleaseAdmin, Depends(get_release_admin)]
RegistryDep = Annotated[AdapterRegistry, Depends(get_registry)]


def get_answers(runtime: RuntimeDep) -> AnswerService:
    return runtime.answers


def get_readiness(runtime: RuntimeDep) -> ReadinessService:
    return runtime.readiness


def get_metrics(runtime: RuntimeDep) -> Metrics:
    return runtime.metrics


AnswersDep = Annotated[AnswerService, Depends(get_answers)]
ReadinessDep = Annotated[ReadinessService, Depends(get_readiness)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False)


class AdminAuthError(TwinloopError):
    status_code = 401


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def optional_admin(runtime: RuntimeDep, credentials: CredentialsDep) -> str | None:
    """The admin actor when a valid token came, None when none came; 403 for a wrong one."""
    if credentials is None:
        return None
    expected = runtime.settings.admin_token.get_secret_value()
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AdminAuthError("admin token is not valid", status_code=403)
    return "admin"


def require_admin(actor: Annotated[str | None, Depends(optional_admin)]) -> str:
    """401 without a bearer token, 403 with a wrong one; returns the actor for the audit log."""
    if actor is None:
        raise AdminAuthError("admin token required: send `Authorization: Bearer <token>`")
    return actor


AdminDep = Annotated[str, Depends(require_admin)]
OptionalAdminDep = Annotated[str | None, Depends(optional_admin)]
