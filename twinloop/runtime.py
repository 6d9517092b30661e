"""Everything a serving process holds open, built and closed in one place.

The gateway's lifespan (and later the trainer) opens one `Runtime`; nothing
network-facing exists outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from rag.embeddings import Embedder
from rag.store import KnowledgeStore, close_chroma, connect_chroma
from twinloop.db.session import SessionMaker, create_engine, create_sessionmaker
from twinloop.engines.client import EngineClient, EngineTimeouts
from twinloop.inference.readiness import ReadinessService
from twinloop.inference.retrieval import DocumentSearch
from twinloop.inference.service import AnswerService
from twinloop.ingest.service import DocumentIndex, IngestService
from twinloop.metrics import Metrics
from twinloop.operations.admin import ReleaseAdmin
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.service import QaService
from twinloop.qa.setup import open_qa
from twinloop.registry.service import AdapterRegistry
from twinloop.releases.service import ReleaseController
from twinloop.releases.watcher import watch_releases
from twinloop.routing.evaluation import default_testset
from twinloop.routing.router import DomainRouter
from twinloop.routing.rules import RouterRules, default_rules
from twinloop.routing.service import Router, RoutingService
from twinloop.settings import Settings, Slot
from twinloop.training.cycles import TrainingCycles
from twinloop.weights.prepare import resolve_embedding_model


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: AsyncEngine
    sessionmaker: SessionMaker
    metrics: Metrics
    engines: dict[str, EngineClient]
    releases: ReleaseController
    release_admin: ReleaseAdmin
    registry: AdapterRegistry
    routing: RoutingService
    ingest: IngestService
    answers: AnswerService
    readiness: ReadinessService
    training: TrainingCycles
    qa: QaService


class Knowledge(DocumentIndex, DocumentSearch, Protocol):
    """What the gateway needs of the document index: write (ingest) and search (answer)."""


def load_embedder(settings: Settings) -> Embedder:
    """The embedding model, from its folder. Blocking: call off the event loop."""
    return Embedder(resolve_embedding_model(settings.models.embedding_model))


def _embedding_router(embedder: Embedder, rules: RouterRules) -> DomainRouter:
    return DomainRouter(embedder=embedder, rules=rules)


def load_router(settings: Settings) -> DomainRouter:
    """The embedding router with the shipped rules. Blocking: loads the embedding model."""
    return DomainRouter(embedder=load_embedder(settings), rules=default_rules())


def engine_clients(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[httpx.AsyncClient, dict[str, EngineClient]]:
    """One HTTP client (the caller closes it) and an engine client per slot on it."""
    cfg = settings.engines
    timeouts = EngineTimeouts(connect_s=cfg.connect_timeout_s, read_s=cfg.read_timeout_s)
    http = httpx.AsyncClient(
        transport=transport,
        timeout=timeouts.to_httpx(),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )
    engines = {
        slot.value: EngineClient(
            name=slot.value,
            base_url=cfg.base_url(slot),
            http=http,
            timeouts=timeouts,
            retries=cfg.retries,
        )
        for slot in Slot
    }
    return http, engines


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    router: Router | None = None,
    knowledge: Knowledge | None = None,
) -> AsyncIterator[Runtime]:
    """Open the database, the engine clients and the services; close them on exit.

    `engine_transport` replaces the network under the engine clients (tests pass
    an `httpx.MockTransport`); `router` (used for every rules version) and `knowledge`
    replace the embedding router and the Chroma index (unit tests must not load a
    model or need a server).
    """
    chroma = None
    embedder: Embedder | None = None
    build_router: Callable[[RouterRules], Router]
    if router is not None:
        fixed = router
        build_router = lambda _rules: fixed  # noqa: E731
    if router is None or knowledge is None:
        embedder = await asyncio.to_thread(load_embedder, settings)
        if router is None:
            build_router = partial(_embedding_router, embedder)
        if knowledge is None:
            chroma = await connect_chroma(settings.rag)
            knowledge = KnowledgeStore(client=chroma, embedder=embedder)
    db = create_engine(settings.sqlalchemy_url)
    sessionmaker = create_sessionmaker(db)
    http, engines = engine_clients(settings, engine_transport)
    stack = contextlib.AsyncExitStack()
    try:
        metrics = Metrics()
        base_name = settings.models.served_name
        routing = RoutingService(
            sessionmaker=sessionmaker,
            build_router=build_router,
            testset=default_testset(),
            domains=settings.domains,
        )
        await routing.ensure_default()
        releases = ReleaseController(
            sessionmaker=sessionmaker,
            engines=engines,
            metrics=metrics,
            base_model_name=base_name,
            verified_for_s=2 * settings.gateway.reconcile_s,
        )
        await releases.load()
        answers = AnswerService(
            engines=engines,
            releases=releases,
            sessionmaker=sessionmaker,
            metrics=metrics,
            domains=settings.domains,
            default_domain=settings.default_domain,
            base_model_name=base_name,
            default_max_tokens=settings.gateway.default_max_tokens,
            routing=routing,
            knowledge=knowledge,
            top_k=settings.rag.top_k,
            min_score=settings.rag.min_score,
        )
        readiness = ReadinessService(
            sessionmaker=sessionmaker,
            engines=engines,
            releases=releases,
            metrics=metrics,
            base_model_name=base_name,
            cache_s=settings.gateway.readiness_cache_s,
        )
        training = TrainingCycles(sessionmaker=sessionmaker)
        qa = await stack.enter_async_context(
            open_qa(
                settings,
                engines=engines,
                releases=releases,
                sessionmaker=sessionmaker,
                knowledge=knowledge,
                embed=embedder.embed if embedder is not None else None,
                metrics=QaMetrics(metrics.registry),
            )
        )
        watcher = asyncio.create_task(
            watch_releases(
                releases,
                poll_s=settings.gateway.release_poll_s,
                reconcile_s=settings.gateway.reconcile_s,
            ),
            name="release-watcher",
        )
        try:
            yield Runtime(
                settings=settings,
                db=db,
                sessionmaker=sessionmaker,
                metrics=metrics,
                engines=engines,
                releases=releases,
                release_admin=ReleaseAdmin(
                    controller=releases,
                    engines=engines,
                    sessionmaker=sessionmaker,
                    domains=settings.domains,
                    routing=routing,
                    training=training,
                    qa=qa,
                ),
                registry=AdapterRegistry.from_settings(settings),
                routing=routing,
                ingest=IngestService.from_settings(
                    settings,
                    sessionmaker=sessionmaker,
                    index=knowledge,
                    releases=releases,
                    metrics=metrics,
                ),
                answers=answers,
                readiness=readiness,
                training=training,
                qa=qa,
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await stack.aclose()
        if chroma is not None:
            await close_chroma(chroma)
        await http.aclose()
        await db.dispose()
