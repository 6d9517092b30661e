"""How a registered adapter reaches an engine: a verified copy at a path the engine reads.

The registry records an adapter's sha256; what a slot's engine is asked to load is
`<engine_dir>/<sha256>` (settings.ArtifactSettings), after one of two fetch steps made sure a
copy that hashes to the sha256 is there:

- **local**: this process syncs the store into `cache_dir`, a folder the engine reads too —
  the store's own folder on one machine or a shared volume (a hash check in place), or a
  volume this process shares with the engine;
- **agent**: the engine's fetch agent (`twinloop adapters fetch-agent`, a sidecar on the
  engine's node) syncs the store into the engine's own disk and answers with its path; for
  engines on other nodes, which share no volume with the gateways.

Every fetch is timed and counted by outcome (`twinloop_artifact_fetch_seconds`,
`twinloop_artifact_fetches_total`); a copy that does not verify raises AdapterIntegrityError
and the engine is never asked to load it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from adapters.artifacts import ArtifactStore, EngineFolder, engine_folder, sync_adapter
from twinloop.engines.fetch_agent import FetchAgentClient
from twinloop.errors import AdapterIntegrityError, TwinloopError
from twinloop.metrics import Metrics
from twinloop.settings import Settings, Slot


@dataclass(frozen=True, slots=True)
class Delivered:
    path: str
    """As the engine sees it."""
    fetched: bool
    """False when a verified copy was already in place."""


class AdapterDelivery(Protocol):
    @property
    def description(self) -> dict[str, str]:
        """What /status shows of it."""
        ...

    async def deliver(self, sha256: str) -> Delivered: ...


class LocalDelivery:
    """This process puts the verified copy into a folder the engine reads."""

    def __init__(self, *, store: ArtifactStore, folder: EngineFolder) -> None:
        self._store = store
        self._folder = folder

    @property
    def description(self) -> dict[str, str]:
        return {
            "fetch": "local",
            "cache_dir": str(self._folder.cache_dir),
            "engine_dir": str(self._folder.engine_dir),
        }

    async def deliver(self, sha256: str) -> Delivered:
        synced = await asyncio.to_thread(sync_adapter, self._store, sha256, self._folder.cache_dir)
        return Delivered(path=self._folder.engine_path(sha256), fetched=synced.fetched)


class AgentDelivery:
    """The engine's fetch agent puts the verified copy on the engine's own disk."""

    def __init__(self, client: FetchAgentClient) -> None:
        self._client = client

    @property
    def description(self) -> dict[str, str]:
        return {"fetch": "agent", "agent_url": self._client.base_url}

    async def deliver(self, sha256: str) -> Delivered:
        fetched = await self._client.fetch(sha256)
        return Delivered(path=fetched.path, fetched=fetched.fetched)


class EngineAdapters:
    """Each slot's fetch step, measured; what the release controller calls before a load."""

    def __init__(
        self, *, store: ArtifactStore, deliveries: Mapping[Slot, AdapterDelivery], metrics: Metrics
    ) -> None:
        self.store = store
        self._deliveries = dict(deliveries)
        self._metrics = metrics

    async def path_for(self, slot: Slot, sha256: str) -> str:
        """The path to hand `slot`'s engine for `sha256`, once a verified copy is there."""
        started = time.perf_counter()
        try:
            delivered = await self._deliveries[slot].deliver(sha256)
        except AdapterIntegrityError:
            self._count(slot, "refused")
            raise
        except TwinloopError:
            self._count(slot, "failed")
            raise
        self._metrics.artifact_fetch_seconds.labels(slot.value).observe(
            time.perf_counter() - started
        )
        self._count(slot, "fetched" if delivered.fetched else "cached")
        return delivered.path

    def describe(self) -> dict[str, dict[str, str]]:
        return {slot.value: delivery.description for slot, delivery in self._deliveries.items()}

    def _count(self, slot: Slot, outcome: str) -> None:
        self._metrics.artifact_fetches.labels(slot.value, outcome).inc()


def engine_adapters(
    settings: Settings, *, store: ArtifactStore, http: httpx.AsyncClient, metrics: Metrics
) -> EngineAdapters:
    """Each slot's fetch step as the settings say: its agent where one is configured, else
    local sync into `artifacts.cache_dir`."""
    folder = engine_folder(settings, store)
    deliveries: dict[Slot, AdapterDelivery] = {}
    for slot in Slot:
        url = settings.artifacts.fetch_url(slot)
        deliveries[slot] = (
            AgentDelivery(
                FetchAgentClient(
                    name=slot.value,
                    base_url=url,
                    http=http,
                    timeout_s=settings.artifacts.fetch_timeout_s,
                )
            )
            if url
            else LocalDelivery(store=store, folder=folder)
        )
    return EngineAdapters(store=store, deliveries=deliveries, metrics=metrics)
