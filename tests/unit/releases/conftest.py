"""Another gateway on the same database: a second process, in effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.gateway import in_process_gateway


@asynccontextmanager
async def another_gateway(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway process, in effect: its own runtime on the same database."""
    async with in_process_gateway(settings, fake_engine.transport(), "http://gateway-2") as c:
        yield c


@pytest.fixture
async def second_client(
    settings: Settings, fake_engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    async with another_gateway(settings, fake_engine) as c:
        yield c
