"""The gateway's app factory. Everything it holds open belongs to the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodyLimit, BodyLimitMiddleware
from api.logging import RequestIdMiddleware
from api.overhead import OverheadMiddleware
from api.routes import admin, answer, canary, health, ingest, keys, mined, openai, qa, train
from twinloop import __version__
from twinloop.routing.service import Router
from twinloop.runtime import Knowledge, open_runtime
from twinloop.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    router: Router | None = None,
    knowledge: Knowledge | None = None,
) -> FastAPI:
    """Build the gateway. Tests put a fake engine under the client and a fake router in."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(
            settings, engine_transport=engine_transport, router=router, knowledge=knowledge
        ) as runtime:
            app.state.runtime = runtime
            # What start-up loaded (the libraries, the embedding model, the runtime's objects:
            # ~230,000 objects) lives as long as the gateway; every older-generation
            # collection would walk it again. Frozen, the collector reads only what requests
            # allocate: bench/gateway_overhead.py measured streams relayed 34% faster.
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # collectable again (tests start and stop many gateways)

    app = FastAPI(title="twinloop gateway", version=__version__, lifespan=lifespan)
    gateway = settings.gateway
    app.add_middleware(
        BodyLimitMiddleware,
        default=BodyLimit(gateway.max_body_bytes, "gateway.max_body_bytes"),
        by_path={
            "/ingest": BodyLimit(gateway.max_ingest_body_bytes, "gateway.max_ingest_body_bytes")
        },
    )
    # Outside the body limit, so the overhead is timed from the request's arrival.
    app.add_middleware(OverheadMiddleware)
    # Added last, so outermost: a refused body still gets its request id.
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app, retry_after_s=settings.gateway.retry_after_s)
    for module in (answer, ingest, openai, health, admin, canary, train, qa, keys, mined):
        app.include_router(module.router)
    return app
