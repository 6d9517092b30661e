"""The gateway in-process, as the unit tests build it, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from twinloop.settings import Settings
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


@asynccontextmanager
async def in_process_gateway(
    settings: Settings, engine_transport: httpx.AsyncBaseTransport, base_url: str = "http://gateway"
) -> AsyncIterator[httpx.AsyncClient]:
    """A started gateway (fake router and document index, engines behind `engine_transport`)
    and a client that calls it in-process; stopped on exit."""
    from api.app import create_app

    app = create_app(
        settings, engine_transport=engine_transport, router=FakeRouter(), knowledge=FakeKnowledge()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
