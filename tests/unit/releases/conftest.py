"""Another gateway on the same database: a second process, in effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


@asynccontextmanager
async def another_gateway(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway process, in effect: its own runtime on the same database."""
    other: FastAPI = create_app(
        settings,
        engine_transport=fake_engine.transport(),
        router=FakeRouter(),
        knowledge=FakeKnowledge(),
    )
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway-2") as c:
            yield c


@pytest.fixture
async def second_client(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    async with another_gateway(settings, fake_engine) as c:
        yield c
