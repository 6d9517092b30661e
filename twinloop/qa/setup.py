"""Building the QA service the same way in the gateway and in the trainer process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.engines.judge import open_judge
from twinloop.inference.retrieval import DocumentSearch
from twinloop.qa.judges import Embed, LlmJudge, ReferenceJudge
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.service import QaService
from twinloop.releases.service import ReleaseController
from twinloop.safety.screens import SafetyConfig
from twinloop.settings import Settings


@asynccontextmanager
async def open_qa(
    settings: Settings,
    *,
    engines: Mapping[str, EngineClient],
    releases: ReleaseController,
    sessionmaker: SessionMaker,
    knowledge: DocumentSearch | None,
    embed: Embed | None,
    metrics: QaMetrics,
    judge_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[QaService]:
    """The QA service; with `qa.llm_judge_url` set, also the LLM judge's HTTP client."""
    cfg = settings.qa
    async with open_judge(settings, transport=judge_transport) as client:
        llm_judge = LlmJudge(client=client, model=cfg.llm_judge_model) if client else None
        yield QaService(
            engines=engines,
            releases=releases,
            sessionmaker=sessionmaker,
            knowledge=knowledge,
            judge=ReferenceJudge(embed=embed),
            settings=cfg,
            domains=settings.domains,
            default_domain=settings.default_domain,
            top_k=settings.rag.top_k,
            min_score=settings.rag.min_score,
            metrics=metrics,
            llm_judge=llm_judge,
            cleaning=CleaningConfig.from_settings(settings),
            safety=SafetyConfig.from_settings(settings.safety),
        )
