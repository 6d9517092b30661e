"""Readiness: the database answers and the active engine really generates.

vLLM's `/health` can answer 200 while the engine loop is hung, so the probe
asks for one generated token. A success is trusted for a few seconds so that
frequent probes (Kubernetes, load balancers) do not load the engine; a failure
is never cached, so recovery shows at once. Each check answers within `timeout_s`
(a hung engine or database is "not ready", not a hung probe), and a database
failure is reported by its type only: driver messages carry paths and SQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy import text

from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.errors import TwinloopError
from twinloop.metrics import Metrics
from twinloop.releases.service import ReleaseController
from twinloop.settings import Slot

log = structlog.get_logger(__name__)


class ReadinessReport(BaseModel):
    ready: bool
    database: str
    active_slot: str
    engine: str


class ReadinessService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        engines: Mapping[str, EngineClient],
        releases: ReleaseController,
        metrics: Metrics,
        base_model_name: str,
        cache_s: float,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._engines = engines
        self._releases = releases
        self._metrics = metrics
        self._base_model_name = base_model_name
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._engine_ok_until: dict[str, float] = {}

    async def check(self) -> ReadinessReport:
        database = await self._bounded(self._check_database(), "the database")
        slot = self._releases.state.active_slot.value
        engine = await self._bounded(self._check_engine(slot), f"engine {slot}")
        return ReadinessReport(
            ready=database == "ok" and engine == "ok",
            database=database,
            active_slot=slot,
            engine=engine,
        )

    async def _bounded(self, check: Coroutine[Any, Any, str], what: str) -> str:
        try:
            return await asyncio.wait_for(check, timeout=self._timeout_s)
        except TimeoutError:
            return f"error: {what} did not answer within {self._timeout_s:g} s"

    async def _check_database(self) -> str:
        try:
            async with self._sessionmaker.begin() as session:
                await session.execute(text("SELECT 1"))
        except Exception as e:  # any driver error means "not ready"; its text stays in the log
            log.warning("readiness: database check failed", error=f"{type(e).__name__}: {e}")
            return f"error: database unavailable ({type(e).__name__})"
        return "ok"

    async def _check_engine(self, slot: str) -> str:
        # One probe at a time: a burst of readiness checks shares its result.
        async with self._lock:
            if self._clock() < self._engine_ok_until.get(slot, 0.0):
                return "ok"
            try:
                # An engine that restarted serves traffic only with its adapters back.
                await self._releases.reconcile(Slot(slot))
                await self._engines[slot].probe_generation(self._base_model_name)
            except TwinloopError as e:
                self._metrics.engine_ready.labels(slot).set(0)
                self._engine_ok_until.pop(slot, None)
                return f"error: {e.message}"
            self._metrics.engine_ready.labels(slot).set(1)
            self._engine_ok_until[slot] = self._clock() + self._cache_s
            return "ok"
