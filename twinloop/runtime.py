"""The wiring of a twinloop process: everything it holds open, built and closed in one place.

`open_services` builds what the gateway and the trainer process both hold (database,
engine clients, embedding model, Chroma, the release controller, QA, ingestion) and
closes it in the reverse order; `open_runtime` adds the gateway's own services on top,
and `twinloop.trainer.daemon.open_trainer` the trainer's. Nothing network-facing exists
outside them.
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

from adapters.artifacts import open_store
from rag.backends import EmbeddingBackend, SentenceEmbedder, load_sentence_embedder
from rag.query_embeddings import QueryEmbeddings
from rag.store import KnowledgeStore, close_chroma, connect_chroma
from twinloop.canary.judge import LlmPairwiseJudge
from twinloop.canary.service import CanaryService
from twinloop.canary.watcher import watch_canary
from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import (
    SessionMaker,
    create_engine,
    create_sessionmaker,
)
from twinloop.engines.client import EngineClient, EngineTimeouts
from twinloop.engines.judge import open_judge
from twinloop.identity.admin_token import load_admin_token
from twinloop.identity.service import IdentityService
from twinloop.inference.answer_cache import AnswerCache
from twinloop.inference.limits import RequestLimits
from twinloop.inference.readiness import ReadinessService
from twinloop.inference.retrieval import DocumentSearch
from twinloop.inference.service import AnswerService
from twinloop.inference.writer import answer_writer
from twinloop.ingest.service import DocumentIndex, IngestService
from twinloop.metrics import Metrics
from twinloop.mining.metrics import MiningMetrics
from twinloop.mining.service import MiningService
from twinloop.operations.admin import ReleaseAdmin
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.service import QaService
from twinloop.qa.setup import open_qa
from twinloop.registry.delivery import EngineAdapters, engine_adapters
from twinloop.registry.service import AdapterRegistry
from twinloop.releases.service import ReleaseController
from twinloop.releases.watcher import watch_releases
from twinloop.routing.evaluation import default_testset
from twinloop.routing.router import DomainRouter
from twinloop.routing.rules import RouterRules
from twinloop.routing.service import Router, RoutingService
from twinloop.safety.screens import SafetyConfig
from twinloop.settings import Settings, Slot
from twinloop.training.cycles import TrainingCycles
from twinloop.weights.prepare import resolve_embedding_model


@dataclass(frozen=True)
class Services:
    """What the gateway and the trainer both hold. `knowledge`, `qa` and `ingest` are None
    in a process opened without the knowledge store."""

    settings: Settings
    db: AsyncEngine
    sessionmaker: SessionMaker
    engines: dict[str, EngineClient]
    adapters: EngineAdapters
    releases: ReleaseController
    registry: AdapterRegistry
    training: TrainingCycles
    embedder: SentenceEmbedder | None
    knowledge: Knowledge | None
    qa: QaService | None
    ingest: IngestService | None


@dataclass(frozen=True)
class Runtime:
    """What the gateway holds: the shared services and its own (routing, answers, admin)."""

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
    canary: CanaryService
    identity: IdentityService
    mining: MiningService


class Knowledge(DocumentIndex, DocumentSearch, Protocol):
    """What the gateway needs of the document index: write (ingest) and search (answer)."""


def load_embedder(settings: Settings) -> SentenceEmbedder:
    """The embedding model, from its folder, on the backend `embeddings.backend` names (an
    ONNX graph is exported into the data directory on first use). Blocking: call off the
    event loop."""
    return load_sentence_embedder(
        resolve_embedding_model(settings.models.embedding_model),
        EmbeddingBackend(settings.embeddings.backend),
        cache_dir=settings.onnx_dir,
        threads=settings.embeddings.threads,
    )


def _embedding_router(embedder: SentenceEmbedder, rules: RouterRules) -> DomainRouter:
    return DomainRouter(embedder=embedder, rules=rules)


def engine_clients(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[httpx.AsyncClient, dict[str, EngineClient]]:
    """One httpx client (the caller closes it: the fetch agents use it too) and an engine
    client per slot (the caller closes them): on connections of their own (the lean client or
    aiohttp, as `engines.http_client` says), or on the httpx client when `transport` replaces
    the network (tests) or `engines.http_client` says httpx."""
    cfg = settings.engines
    timeouts = EngineTimeouts(connect_s=cfg.connect_timeout_s, read_s=cfg.read_timeout_s)
    http = httpx.AsyncClient(
        transport=transport,
        timeout=timeouts.to_httpx(),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )
    on_httpx = transport is not None or cfg.http_client == "httpx"
    engines = {
        slot.value: EngineClient(
            name=slot.value,
            base_url=cfg.base_url(slot),
            http=http if on_httpx else None,
            timeouts=timeouts,
            retries=cfg.retries,
            library="aiohttp" if cfg.http_client == "httpx" else cfg.http_client,
        )
        for slot in Slot
    }
    return http, engines


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    metrics: Metrics,
    qa_metrics: QaMetrics,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    with_knowledge: bool = True,
    knowledge: Knowledge | None = None,
    with_embedder: bool = False,
) -> AsyncIterator[Services]:
    """Open what every twinloop process holds; close it in the reverse order on exit.

    `with_knowledge` opens the knowledge store (Chroma, unless `knowledge` replaces it)
    and what needs it: QA and ingestion. The embedding model is loaded for Chroma, or
    with `with_embedder` (the gateway's router needs it). `engine_transport` replaces the
    network under the engine clients (tests pass an `httpx.MockTransport`).
    """
    async with contextlib.AsyncExitStack() as stack:
        embedder: SentenceEmbedder | None = None
        if with_embedder or (with_knowledge and knowledge is None):
            embedder = await asyncio.to_thread(load_embedder, settings)
        if not with_knowledge:
            knowledge = None
        elif knowledge is None:
            assert embedder is not None
            chroma = await connect_chroma(settings.rag)
            stack.push_async_callback(close_chroma, chroma)
            knowledge = KnowledgeStore(client=chroma, embedder=embedder)
        db = create_engine(settings.sqlalchemy_url, sqlite_synchronous=settings.sqlite_synchronous)
        stack.push_async_callback(db.dispose)
        sessionmaker = create_sessionmaker(db)
        http, engines = engine_clients(settings, engine_transport)
        stack.push_async_callback(http.aclose)
        for engine in engines.values():
            stack.push_async_callback(engine.aclose)
        store = await asyncio.to_thread(open_store, settings)  # boto3 reads its models from disk
        stack.callback(store.close)
        # The fetch agents beside the engines are reached like the engines (tests: the same
        # transport), on the same client.
        adapters = engine_adapters(settings, store=store, http=http, metrics=metrics)
        releases = ReleaseController(
            sessionmaker=sessionmaker,
            engines=engines,
            adapters=adapters,
            metrics=metrics,
            base_model_name=settings.models.served_name,
            verified_for_s=2 * settings.gateway.reconcile_s,
        )
        await releases.load()
        qa = ingest = None
        if knowledge is not None:
            qa = await stack.enter_async_context(
                open_qa(
                    settings,
                    engines=engines,
                    releases=releases,
                    sessionmaker=sessionmaker,
                    knowledge=knowledge,
                    embed=embedder.embed if embedder is not None else None,
                    metrics=qa_metrics,
                )
            )
            ingest = IngestService.from_settings(
                settings,
                sessionmaker=sessionmaker,
                index=knowledge,
                releases=releases,
                metrics=metrics,
            )
        yield Services(
            settings=settings,
            db=db,
            sessionmaker=sessionmaker,
            engines=engines,
            adapters=adapters,
            releases=releases,
            registry=AdapterRegistry.from_settings(settings, store),
            training=TrainingCycles(sessionmaker=sessionmaker),
            embedder=embedder,
            knowledge=knowledge,
            qa=qa,
            ingest=ingest,
        )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    router: Router | None = None,
    knowledge: Knowledge | None = None,
) -> AsyncIterator[Runtime]:
    """The gateway's services over `open_services`, its release watcher and its canary
    evaluation loop (the running canary is taken from the database first: a restarted
    gateway continues it).

    `router` (used for every rules version) and `knowledge` replace the embedding router
    and the Chroma index (unit tests must not load a model or need a server).
    """
    # Refuse to start without a usable admin token, before anything is opened.
    admin_token = load_admin_token(settings)
    metrics = Metrics()
    async with (
        open_services(
            settings,
            metrics=metrics,
            qa_metrics=QaMetrics(metrics.registry),
            engine_transport=engine_transport,
            knowledge=knowledge,
            with_embedder=router is None,
        ) as services,
        open_judge(settings) as judge_client,
    ):
        assert services.knowledge is not None and services.qa is not None
        assert services.ingest is not None
        build_router: Callable[[RouterRules], Router]
        embeddings: QueryEmbeddings | None = None
        if router is not None:
            fixed = router
            build_router = lambda _rules: fixed  # noqa: E731
        else:
            assert services.embedder is not None
            build_router = partial(_embedding_router, services.embedder)
            cfg = settings.embeddings
            embeddings = QueryEmbeddings(
                services.embedder,
                window_s=cfg.batch_window_ms / 1000,
                max_batch=cfg.max_batch,
                cache_size=cfg.cache_size,
                metrics=metrics,
            )
        routing = RoutingService(
            sessionmaker=services.sessionmaker,
            build_router=build_router,
            testset=default_testset(),
            domains=settings.domains,
        )
        await routing.ensure_default()
        canary = CanaryService(
            sessionmaker=services.sessionmaker,
            releases=services.releases,
            metrics=metrics,
            settings=settings.canary,
            max_rejections=settings.trainer.max_rejections,
            verdicts=services.qa,
            judge=LlmPairwiseJudge(client=judge_client, model=settings.qa.llm_judge_model)
            if judge_client is not None
            else None,
        )
        await canary.load()
        # A gateway killed between a batch's commit and its staging left versions unstaged.
        await services.ingest.stage_left_pending(actor="system: gateway start")
        answers = AnswerService(
            engines=services.engines,
            releases=services.releases,
            sessionmaker=services.sessionmaker,
            metrics=metrics,
            domains=settings.domains,
            default_domain=settings.default_domain,
            base_model_name=settings.models.served_name,
            default_max_tokens=settings.gateway.default_max_tokens,
            routing=routing,
            canary=canary,
            knowledge=services.knowledge,
            top_k=settings.rag.top_k,
            min_score=settings.rag.min_score,
            mirror_limit=settings.canary.mirror_concurrency,
            limits=RequestLimits.from_settings(settings.gateway),
            safety=SafetyConfig.from_settings(settings.safety),
            # The answers' group commit, on a connection of its own.
            writer=answer_writer(
                settings.sqlalchemy_url,
                metrics=metrics,
                sqlite_synchronous=settings.sqlite_synchronous,
            ),
            embeddings=embeddings,
            answer_cache=AnswerCache.from_settings(settings.answer_cache, metrics),
        )
        watcher = asyncio.create_task(
            watch_releases(
                services.releases,
                poll_s=settings.gateway.release_poll_s,
                reconcile_s=settings.gateway.reconcile_s,
            ),
            name="release-watcher",
        )
        evaluator = asyncio.create_task(
            watch_canary(
                canary, period_s=settings.canary.evaluate_s, refresh_s=settings.canary.refresh_s
            ),
            name="canary-evaluator",
        )
        try:
            yield Runtime(
                settings=settings,
                db=services.db,
                sessionmaker=services.sessionmaker,
                metrics=metrics,
                engines=services.engines,
                releases=services.releases,
                release_admin=ReleaseAdmin(
                    controller=services.releases,
                    engines=services.engines,
                    sessionmaker=services.sessionmaker,
                    domains=settings.domains,
                    routing=routing,
                    training=services.training,
                    qa=services.qa,
                    canary=canary,
                    adapters=services.adapters,
                    answers=answers,
                ),
                registry=services.registry,
                routing=routing,
                ingest=services.ingest,
                answers=answers,
                readiness=ReadinessService(
                    sessionmaker=services.sessionmaker,
                    engines=services.engines,
                    releases=services.releases,
                    metrics=metrics,
                    base_model_name=settings.models.served_name,
                    cache_s=settings.gateway.readiness_cache_s,
                    timeout_s=settings.gateway.readiness_timeout_s,
                ),
                training=services.training,
                qa=services.qa,
                canary=canary,
                identity=IdentityService(
                    sessionmaker=services.sessionmaker,
                    admin_token=admin_token,
                    metrics=metrics,
                    domains=settings.domains,
                    default_rate_limit_per_minute=settings.auth.default_rate_limit_per_minute,
                    require_client_key=settings.auth.require_client_key,
                ),
                # Reviews only: the trainer mines (twinloop.mining's docstring says why).
                mining=MiningService(
                    sessionmaker=services.sessionmaker,
                    settings=settings.mining,
                    cleaning=CleaningConfig.from_settings(settings),
                    metrics=MiningMetrics(metrics.registry),
                ),
            )
        finally:
            await answers.aclose()
            if embeddings is not None:
                await embeddings.aclose()
            for task in (evaluator, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
