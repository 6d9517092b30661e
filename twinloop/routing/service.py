"""Versioned router rules: which rules a snapshot routes with, and how new ones get in.

New rules arrive only as a proposal (`POST /pr`): they are scored on the shipped
labelled routing set and refused if they route worse than the rules Shadow uses
now. Accepted rules become a new version that reaches Shadow in a new snapshot,
and Active only through the normal swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.exc import IntegrityError

from twinloop.db.models import RouterRulesVersion
from twinloop.db.session import SessionMaker
from twinloop.errors import InvalidRequestError, NotFoundError
from twinloop.routing import repository
from twinloop.routing.evaluation import LabelledQuestion, RoutingReport, evaluate
from twinloop.routing.router import RouteResult
from twinloop.routing.rules import RouterRules, default_rules

DEFAULT_RULES_VERSION = 1


class Router(Protocol):
    def route(self, question: str) -> RouteResult: ...

    def route_many(self, questions: Sequence[str]) -> list[RouteResult]: ...

    def route_embedding(self, embedding: NDArray[np.float32]) -> RouteResult: ...


class RulesRejectedError(InvalidRequestError):
    """Proposed rules route the labelled set worse than the rules in use."""


@dataclass(frozen=True)
class Proposal:
    version: int
    accuracy: float
    baseline_version: int
    baseline_accuracy: float


class RoutingService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        build_router: Callable[[RouterRules], Router],
        testset: Sequence[LabelledQuestion],
        domains: Sequence[str],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._build_router = build_router
        self._testset = list(testset)
        self._domains = list(domains)
        self._routers: dict[int, Router] = {}
        self._lock = asyncio.Lock()

    async def ensure_default(self) -> None:
        """Record the shipped rules as version 1 on first start (once: workers or replicas
        starting at once on a new database may all try, and one records them)."""
        with contextlib.suppress(IntegrityError):
            await self._ensure_default()

    async def _ensure_default(self) -> None:
        async with self._sessionmaker.begin() as session:
            if await repository.get(session, DEFAULT_RULES_VERSION) is None:
                await repository.add(
                    session,
                    RouterRulesVersion(
                        version=DEFAULT_RULES_VERSION,
                        rules=_as_json(default_rules()),
                        accuracy=None,
                        created_by="system",
                        reason="the rules shipped with twinloop",
                    ),
                )

    async def router_for(self, version: int | None) -> Router:
        """The router for a snapshot's rules version (None: snapshots made before versions)."""
        version = version or DEFAULT_RULES_VERSION
        if version not in self._routers:
            async with self._lock:
                if version not in self._routers:
                    rules = await self._rules(version)
                    # Embedding the exemplars is CPU work: off the event loop.
                    self._routers[version] = await asyncio.to_thread(self._build_router, rules)
        return self._routers[version]

    async def propose(
        self, rules: dict[str, Any], *, baseline_version: int | None, actor: str, reason: str
    ) -> Proposal:
        """Score `rules` against the rules Shadow uses; store them as a new version if no worse."""
        candidate = RouterRules.from_json(_dump(rules))
        unknown = sorted(set(candidate.domains) - set(self._domains))
        if unknown:
            known = ", ".join(self._domains)
            raise InvalidRequestError(
                f"rules name unknown domain(s) {', '.join(unknown)}; known: {known}"
            )
        baseline_version = baseline_version or DEFAULT_RULES_VERSION
        baseline = await self._report(await self.router_for(baseline_version))
        candidate_router = await asyncio.to_thread(self._build_router, candidate)
        report = await self._report(candidate_router)
        if report.accuracy < baseline.accuracy:
            raise RulesRejectedError(
                f"proposed rules route {report.accuracy:.1%} of the labelled set correctly, "
                f"the rules in use (version {baseline_version}) {baseline.accuracy:.1%}; refused"
            )
        async with self._sessionmaker.begin() as session:
            version = await repository.latest_version(session) + 1
            await repository.add(
                session,
                RouterRulesVersion(
                    version=version,
                    rules=_as_json(candidate),
                    accuracy=report.accuracy,
                    created_by=actor,
                    reason=reason,
                ),
            )
        self._routers[version] = candidate_router
        return Proposal(
            version=version,
            accuracy=report.accuracy,
            baseline_version=baseline_version,
            baseline_accuracy=baseline.accuracy,
        )

    async def _report(self, router: Router) -> RoutingReport:
        return await asyncio.to_thread(evaluate, router, self._testset)

    async def _rules(self, version: int) -> RouterRules:
        async with self._sessionmaker.begin() as session:
            row = await repository.get(session, version)
        if row is None:
            raise NotFoundError(f"router rules version {version} does not exist")
        return RouterRules.from_json(_dump(row.rules))


def _as_json(rules: RouterRules) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(rules.to_json())
    return body


def _dump(rules: dict[str, Any]) -> str:
    return json.dumps(rules)
