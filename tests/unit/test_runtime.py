"""The wiring both processes share: what it opens, and that it closes in reverse order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from twinloop import runtime
from twinloop.metrics import Metrics
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.service import QaService
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge


def _open(settings: Settings, fake_engine: FakeEngine, **options: Any) -> Any:
    metrics = Metrics()
    return runtime.open_services(
        settings,
        metrics=metrics,
        qa_metrics=QaMetrics(metrics.registry),
        engine_transport=fake_engine.transport(),
        **options,
    )


async def test_without_the_knowledge_store_there_is_no_qa_and_no_ingestion(
    settings: Settings, fake_engine: FakeEngine
) -> None:
    async with _open(settings, fake_engine, with_knowledge=False) as services:
        assert (services.knowledge, services.qa, services.ingest) == (None, None, None)
        assert services.embedder is None  # no model loaded, no Chroma connected
        assert services.releases.state.generation >= 1


async def test_with_the_knowledge_store_qa_and_ingestion_use_it(
    settings: Settings, fake_engine: FakeEngine, fake_knowledge: FakeKnowledge
) -> None:
    async with _open(settings, fake_engine, knowledge=fake_knowledge) as services:
        assert services.knowledge is fake_knowledge
        assert isinstance(services.qa, QaService) and services.ingest is not None
        assert services.embedder is None


async def test_everything_opened_is_closed_in_the_reverse_order(
    settings: Settings,
    fake_engine: FakeEngine,
    fake_knowledge: FakeKnowledge,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    real_engine, real_clients, real_qa = (
        runtime.create_engine,
        runtime.engine_clients,
        runtime.open_qa,
    )

    def create_engine(url: str, **options: Any) -> AsyncEngine:
        events.append("open db")
        db = real_engine(url, **options)
        event.listen(db.sync_engine, "engine_disposed", lambda _: events.append("close db"))
        return db

    def engine_clients(*args: Any) -> Any:
        events.append("open http")
        http, engines = real_clients(*args)
        close = http.aclose

        async def logged_close() -> None:
            events.append("close http")
            await close()

        monkeypatch.setattr(http, "aclose", logged_close)
        return http, engines

    @asynccontextmanager
    async def open_qa(*args: Any, **kwargs: Any) -> AsyncIterator[QaService]:
        events.append("open qa")
        async with real_qa(*args, **kwargs) as qa:
            yield qa
        events.append("close qa")

    monkeypatch.setattr(runtime, "create_engine", create_engine)
    monkeypatch.setattr(runtime, "engine_clients", engine_clients)
    monkeypatch.setattr(runtime, "open_qa", open_qa)

    async with _open(settings, fake_engine, knowledge=fake_knowledge):
        events.append("serving")

    opened = ["open db", "open http", "open qa"]
    assert events == [*opened, "serving", "close qa", "close http", "close db"]
