"""Adapter registry: the only way an adapter folder becomes something a slot may serve.

Registering checks the folder (a PEFT LoRA adapter, a rank the engines accept, trained
for the base model this service serves, lineage within one domain), copies it into the
content-addressed artifact store (a folder, or S3: `adapters.artifacts`) and records its
sha256 and where the store keeps it. Engines get adapters by sha256 through
`twinloop.registry.delivery`, which hashes every copy again before it may be loaded.

**Which base model an adapter was trained for.** PEFT records `base_model_name_or_path` as
whatever the trainer passed to `from_pretrained`: a Hugging Face id, or a folder path that
is often on another machine. It matches this service when, for one of the aliases from
`base_model_aliases`:

1. the two strings are equal; or
2. taken as local paths (`~` expanded, relative ones against the working directory,
   symlinks resolved), they are the same folder; or
3. their last path components are equal ignoring case, so that
   `HuggingFaceTB/SmolLM2-135M-Instruct`, `/elsewhere/smollm2-135m-instruct/` and the
   served name `smollm2-135m-instruct` all name the same model.

Rule 3 trusts folder names: keep a custom base model in a folder named after the model,
not a generic `model/`, or adapters for any other model kept in a `model/` folder match.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict, Unpack

from sqlalchemy.ext.asyncio import AsyncSession

from adapters.artifacts import ADAPTERS_DIRNAME, ArtifactStore, StoredArtifact, open_store
from adapters.files import AdapterConfigInfo, InvalidAdapterError, read_adapter_config
from twinloop.db.models import AdapterVersion, AuditEntry
from twinloop.errors import InvalidRequestError, NotFoundError, TwinloopError
from twinloop.registry import repository
from twinloop.settings import Settings

__all__ = ["ADAPTERS_DIRNAME", "AdapterConflictError", "AdapterRegistry", "base_model_aliases"]

DEFAULT_BASE_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_NAME_HASH_CHARS = 12


class AdapterConflictError(TwinloopError):
    """The same adapter files are already registered in another domain."""

    status_code = 409


def base_model_aliases(settings: Settings) -> frozenset[str]:
    """Every name an adapter's recorded base model may use for the model this service serves."""
    configured = settings.base_model_path
    aliases = {configured, settings.models.served_name}
    folder = Path(configured).expanduser()
    if folder.exists():
        aliases.add(str(folder.resolve()))
    if settings.models.base_model is None:
        # The prepared folder is converted from this model; adapters trained on the
        # original from the Hub fit it.
        aliases.add(DEFAULT_BASE_MODEL_HUB_ID)
    return frozenset(aliases)


def _resolved(name: str) -> str:
    return str(Path(name).expanduser().resolve())


def _tail(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name.casefold()


class RecordOptions(TypedDict, total=False):
    """What `AdapterRegistry.record` takes beside the files and the domain."""

    parent_id: str | None
    grown_from_id: str | None
    training_run_id: str | None
    metrics: dict[str, Any] | None
    actor: str | None


@dataclass(frozen=True)
class StoredAdapter:
    """An adapter folder checked and copied into the artifact store, not yet recorded."""

    source: Path
    config: AdapterConfigInfo
    artifact: StoredArtifact


class AdapterRegistry:
    def __init__(
        self,
        *,
        store: ArtifactStore,
        base_model_aliases: frozenset[str],
        max_lora_rank: int,
        domains: Sequence[str],
    ) -> None:
        if not base_model_aliases:
            raise ValueError("base_model_aliases must name the base model this service serves")
        self._store = store
        self._aliases = base_model_aliases
        self._alias_paths = frozenset(_resolved(alias) for alias in base_model_aliases)
        self._alias_tails = frozenset(filter(None, map(_tail, base_model_aliases)))
        self._max_lora_rank = max_lora_rank
        self._domains = tuple(domains)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ArtifactStore | None = None
    ) -> AdapterRegistry:
        """The registry on `store`, else on the store the settings name (`open_store`)."""
        return cls(
            store=store if store is not None else open_store(settings),
            base_model_aliases=base_model_aliases(settings),
            max_lora_rank=settings.engines.max_lora_rank,
            domains=settings.domains,
        )

    @property
    def store(self) -> ArtifactStore:
        return self._store

    async def register(
        self,
        session: AsyncSession,
        *,
        source: Path,
        domain: str,
        **recorded: Unpack[RecordOptions],
    ) -> AdapterVersion:
        """Check, copy and record the adapter folder `source`: `put_files`, then `record`
        (see them; `recorded` are its options). The files are copied before `session` is
        first used, so no connection is held while they are."""
        self._check_domain(domain)
        stored = await self.put_files(source)
        return await self.record(session, stored, domain=domain, **recorded)

    async def put_files(self, source: Path) -> StoredAdapter:
        """Check the adapter folder `source` and copy it into the artifact store; no
        database. Done before a transaction opens: a copy or an upload can take seconds
        under load, and a transaction open meanwhile holds a pooled connection (SQLite's
        gateway has one) and, once it has written, the database's write lock."""
        config = await asyncio.to_thread(self._inspect, source)
        artifact = await asyncio.to_thread(self._put, source, config)
        return StoredAdapter(source=source, config=config, artifact=artifact)

    async def record(
        self,
        session: AsyncSession,
        stored: StoredAdapter,
        *,
        domain: str,
        parent_id: str | None = None,
        grown_from_id: str | None = None,
        training_run_id: str | None = None,
        metrics: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> AdapterVersion:
        """Record an adapter `put_files` copied.

        `parent_id` is the version it refines (what Active served in its domain when it was
        registered); `grown_from_id` the version whose weights it started from, when it was
        trained from one instead of the base model (a continual cycle). Registering files
        that are already registered returns the existing row unchanged (the lineage and
        metrics of the first registration stand). An `actor` (an operator through the admin
        API) is written to the audit log with a new registration. A refused registration
        leaves the copied files in the store, unreferenced (it is content-addressed: the
        same files registered later are the same objects).
        """
        self._check_domain(domain)
        recorded_metrics = _json_metrics(metrics)
        for lineage_id in (parent_id, grown_from_id):
            if lineage_id is not None:
                await self._check_parent(session, lineage_id, domain)
        if training_run_id is not None and not await repository.training_run_exists(
            session, training_run_id
        ):
            raise NotFoundError(f"training run {training_run_id} does not exist")
        artifact, config = stored.artifact, stored.config
        existing = await repository.get_by_sha256(session, artifact.sha256)
        if existing is not None:
            if existing.domain != domain:
                raise AdapterConflictError(
                    f"the files in {stored.source} are already registered as {existing.name} "
                    f"for domain {existing.domain!r}; an adapter version belongs to one domain"
                )
            return existing
        adapter = AdapterVersion(
            domain=domain,
            name=f"{domain}-{artifact.sha256[:_NAME_HASH_CHARS]}",
            base_model=config.base_model_name_or_path,
            path=artifact.location,
            sha256=artifact.sha256,
            parent_id=parent_id,
            grown_from_id=grown_from_id,
            training_run_id=training_run_id,
            metrics=recorded_metrics,
        )
        await repository.add(session, adapter)
        if actor is not None:
            audit = AuditEntry(
                actor=actor,
                action="adapter.register",
                target=adapter.id,
                details={
                    "name": adapter.name,
                    "sha256": adapter.sha256,
                    "source": str(stored.source),
                },
            )
            await repository.add(session, audit)
        return adapter

    def _check_domain(self, domain: str) -> None:
        if domain not in self._domains:
            raise InvalidRequestError(
                f"unknown domain {domain!r}; known domains: {', '.join(self._domains)}"
            )

    async def get(self, session: AsyncSession, adapter_id: str) -> AdapterVersion:
        adapter = await repository.get(session, adapter_id)
        if adapter is None:
            raise NotFoundError(f"adapter version {adapter_id} does not exist")
        return adapter

    async def list(
        self, session: AsyncSession, domain: str | None = None
    ) -> builtins.list[AdapterVersion]:
        """Newest first; every domain unless one is named."""
        return await repository.list_versions(session, domain)

    def trained_for_served_base(self, declared: str) -> bool:
        """Whether `declared` names the served base model (rules in the module docstring).

        Touches the file system to resolve paths: call it from a thread in async code.
        """
        if declared in self._aliases or _resolved(declared) in self._alias_paths:
            return True
        return _tail(declared) in self._alias_tails

    def _inspect(self, source: Path) -> AdapterConfigInfo:
        config = read_adapter_config(source)
        if config.max_rank > self._max_lora_rank:
            raise InvalidAdapterError(
                f"adapter at {source} has LoRA rank {config.max_rank}; the engines accept at "
                f"most rank {self._max_lora_rank} (engines.max_lora_rank)"
            )
        declared = config.base_model_name_or_path
        if declared is None:
            raise InvalidAdapterError(
                f"adapter at {source} does not say which base model it was trained for "
                "(base_model_name_or_path is empty in adapter_config.json)"
            )
        if not self.trained_for_served_base(declared):
            served = ", ".join(repr(alias) for alias in sorted(self._aliases))
            raise InvalidAdapterError(
                f"adapter at {source} was trained for base model {declared!r}; "
                f"this service serves the base model known as {served}"
            )
        return config

    def _put(self, source: Path, inspected: AdapterConfigInfo) -> StoredArtifact:
        def same_as_inspected(stored: Path) -> None:
            # The stored bytes, not `source`, are what engines load: they must be the adapter
            # checked above.
            if read_adapter_config(stored) != inspected:
                raise InvalidAdapterError(
                    f"{source} changed while it was being registered; register it once it is "
                    "fully written"
                )

        return self._store.put(source, check=same_as_inspected)

    async def _check_parent(self, session: AsyncSession, parent_id: str, domain: str) -> None:
        parent = await repository.get(session, parent_id)
        if parent is None:
            raise NotFoundError(f"parent adapter version {parent_id} does not exist")
        if parent.domain != domain:
            raise InvalidRequestError(
                f"parent adapter {parent.name} belongs to domain {parent.domain!r}, not "
                f"{domain!r}; an adapter's lineage stays within one domain"
            )


def _json_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The metrics as they will read back from the database (PostgreSQL's JSON has no NaN)."""
    try:
        normalized: dict[str, Any] = json.loads(json.dumps(metrics or {}, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"metrics must be JSON with finite numbers: {e}") from e
    return normalized
