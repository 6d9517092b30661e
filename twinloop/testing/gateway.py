"""The gateway in-process, as the unit tests build it, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


@asynccontextmanager
async def in_process_gateway_runtime(
    settings: Settings, engine_transport: httpx.AsyncBaseTransport, base_url: str = "http://gateway"
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A started gateway (fake router and document index, engines behind `engine_transport`),
    a client that calls it in-process, and its runtime; stopped on exit. Several on one
    database are several gateway processes in effect: each has its own pool and loops."""
    from api.app import create_app

    app = create_app(
        settings, engine_transport=engine_transport, router=FakeRouter(), knowledge=FakeKnowledge()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client, app.state.runtime


@asynccontextmanager
async def in_process_gateway(
    settings: Settings, engine_transport: httpx.AsyncBaseTransport, base_url: str = "http://gateway"
) -> AsyncIterator[httpx.AsyncClient]:
    """`in_process_gateway_runtime`'s client alone."""
    async with in_process_gateway_runtime(settings, engine_transport, base_url) as (client, _):
        yield client
