"""The fetch agent (`twinloop adapters fetch-agent`): a sidecar that fills one engine's disk.

An engine on another node shares no volume with the gateways and cannot read an object store.
The agent runs beside it (the same pod, or a compose service sharing its adapter volume) and
answers `PUT /adapters/<sha256>` by putting a verified copy of that stored adapter into
`artifacts.cache_dir` (`adapters.artifacts.sync_adapter`: idempotent, atomic, hashed); its
answer names the copy as the engine sees it (`artifacts.engine_dir`), which the gateway then
asks the engine to load. `GET /healthz` names its store and folders.

Like the engine's own endpoints it has no authentication: it only copies adapters the store
holds, by hash, into its own folder. Keep it on the cluster network (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from adapters.artifacts import ArtifactStore, check_sha256, engine_folder, open_store, sync_adapter
from adapters.artifacts.sync import remove_stale_staging
from twinloop.errors import TwinloopError
from twinloop.settings import Settings

log = structlog.get_logger(__name__)


def create_fetch_agent(settings: Settings, *, store: ArtifactStore | None = None) -> FastAPI:
    """The agent's app on `store` (else the store the settings name, closed on shutdown)."""
    owned = store is None
    artifacts = store if store is not None else open_store(settings)
    folder = engine_folder(settings, artifacts)
    # One fetch per adapter at a time: two gateways staging at once download it once.
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The agent is its cache's only writer: a fetch killed with the last process is garbage.
        removed = await asyncio.to_thread(remove_stale_staging, folder.cache_dir)
        if removed:
            log.info("fetch_agent_removed_stale_staging", folders=len(removed))
        log.info(
            "fetch_agent_ready",
            store=artifacts.location,
            cache_dir=str(folder.cache_dir),
            engine_dir=str(folder.engine_dir),
        )
        try:
            yield
        finally:
            if owned:
                artifacts.close()

    app = FastAPI(title="twinloop fetch agent", lifespan=lifespan)

    @app.exception_handler(TwinloopError)
    async def twinloop_error(_: Request, exc: TwinloopError) -> JSONResponse:
        return JSONResponse(
            {"error": type(exc).__name__, "detail": exc.message}, status_code=exc.status_code
        )

    @app.put("/adapters/{sha256}")
    async def fetch(sha256: str) -> dict[str, Any]:
        check_sha256(sha256)
        started = time.perf_counter()
        async with locks[sha256]:
            try:
                synced = await asyncio.to_thread(sync_adapter, artifacts, sha256, folder.cache_dir)
            except TwinloopError as e:
                log.warning("fetch_agent_refused", sha256=sha256, error=type(e).__name__)
                raise
        seconds = time.perf_counter() - started
        log.info("fetch_agent_fetched", sha256=sha256, fetched=synced.fetched, seconds=seconds)
        return {
            "sha256": sha256,
            "path": folder.engine_path(sha256),
            "fetched": synced.fetched,
            "seconds": round(seconds, 4),
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {
            "store": artifacts.location,
            "backend": artifacts.kind,
            "cache_dir": str(folder.cache_dir),
            "engine_dir": str(folder.engine_dir),
        }

    return app
