"""Ingestion: documents with versioned visibility; feedback and examples (see learning.py).

Every batch that changes a domain's documents gives that domain a new RAG
version: new chunks are tagged `added_in=v`, superseded or deleted ones get
`removed_in=v`. A new shadow snapshot pins the new versions and is staged, so
Shadow sees the change at once; Active keeps its pinned versions until a swap,
and a rollback pins the old ones again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.models import Document, IdempotencyKey
from twinloop.db.session import SessionMaker
from twinloop.errors import InvalidRequestError, TwinloopError
from twinloop.identity.errors import PermissionDeniedError
from twinloop.identity.schemas import Caller, system_caller
from twinloop.ingest import learning, permissions, repository
from twinloop.ingest.schemas import (
    FACT_PREFIX,
    MAX_ID_CHARS,
    MAX_ITEMS,
    DocumentItem,
    ExampleItem,
    FeedbackItem,
    IngestItem,
    IngestRequest,
    IngestResponse,
    ItemResult,
)
from twinloop.ingest.screening import IngestScreen
from twinloop.metrics import Metrics
from twinloop.releases import snapshots
from twinloop.releases.service import ReleaseController
from twinloop.settings import Settings

INGEST_ROUTE = "ingest"


def fact_document_id(key: str) -> str:
    """The document id of a taught fact; ids stay within the 128 characters a document has."""
    doc_id = f"{FACT_PREFIX}{key}"
    if len(doc_id) <= MAX_ID_CHARS:
        return doc_id
    return f"{FACT_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}"


class PayloadTooLargeError(TwinloopError):
    status_code = 413


class DocumentIndex(Protocol):
    """The vector side of documents (rag.store.KnowledgeStore, or a fake in unit tests)."""

    async def add_document(
        self,
        *,
        domain: str,
        doc_id: str,
        text: str,
        source: str,
        version: int,
        chunk_size: int,
        chunk_overlap: int,
    ) -> int: ...

    async def remove_document(self, *, domain: str, doc_id: str, version: int) -> int: ...


class IngestService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        index: DocumentIndex,
        releases: ReleaseController,
        metrics: Metrics,
        domains: Sequence[str],
        chunk_chars: int,
        chunk_overlap: int,
        max_text_chars: int,
        cleaning: CleaningConfig | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cleaning = cleaning or CleaningConfig()
        self._index = index
        self._releases = releases
        self._metrics = metrics
        self._domains = list(domains)
        self._chunk_chars = chunk_chars
        self._chunk_overlap = chunk_overlap
        self._max_text_chars = max_text_chars
        # One batch at a time per gateway: two batches must not take the same version.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sessionmaker: SessionMaker,
        index: DocumentIndex,
        releases: ReleaseController,
        metrics: Metrics,
    ) -> IngestService:
        return cls(
            sessionmaker=sessionmaker,
            index=index,
            releases=releases,
            metrics=metrics,
            domains=settings.domains,
            chunk_chars=settings.rag.chunk_chars,
            chunk_overlap=settings.rag.chunk_overlap,
            max_text_chars=settings.rag.max_document_chars,
            cleaning=CleaningConfig.from_settings(settings),
        )

    async def ingest(
        self,
        request: IngestRequest,
        *,
        caller: Caller,
        body: bytes,
        idempotency_key: str | None,
    ) -> IngestResponse:
        """Store the batch durably, then stage a shadow snapshot that sees it.

        Nothing is stored unless `caller` may send every item (`permissions.py`).
        """
        actor = caller.actor
        for item in request.items:
            if (
                isinstance(item, DocumentItem)
                and item.text is not None
                and len(item.text) > self._max_text_chars
            ):
                raise PayloadTooLargeError(
                    f"item {item.id!r} has {len(item.text)} characters; the limit is "
                    f"{self._max_text_chars}"
                )
        body_sha256 = hashlib.sha256(body).hexdigest()
        async with self._lock:
            await self._authorize(caller, request)
            if idempotency_key is not None:
                replay = await self._replay(idempotency_key, body_sha256)
                if replay is not None:
                    return replay
            screen = IngestScreen(self._cleaning)
            async with self._sessionmaker.begin() as session:
                results, versions = await self._apply(session, request.items, screen)
                snapshot_id = None
                if versions:
                    snapshot_id = await self._shadow_snapshot(session, versions, actor)
                response = IngestResponse(items=results, shadow_snapshot_id=snapshot_id)
                if idempotency_key is not None:
                    await repository.add(
                        session,
                        IdempotencyKey(
                            key=idempotency_key,
                            route=INGEST_ROUTE,
                            request_sha256=body_sha256,
                            status_code=202,
                            response=response.model_dump(mode="json"),
                        ),
                    )
            for result in results:
                self._metrics.ingested_items.labels(result.type, result.status).inc()
            for rule, n in screen.quarantined.items():
                self._metrics.screened_items.labels(f"quarantined.{rule}").inc(n)
            for kind, n in screen.redactions.items():
                self._metrics.redactions.labels(kind).inc(n)
            if snapshot_id is not None:
                await self._releases.stage(snapshot_id, actor=actor, reason="ingest: new documents")
            return response

    async def _authorize(self, caller: Caller, request: IngestRequest) -> None:
        async with self._sessionmaker.begin() as session:
            try:
                await permissions.authorize(session, caller, request.items)
            except PermissionDeniedError:
                self._metrics.auth_failures.labels(f"/{INGEST_ROUTE}", "forbidden").inc()
                raise

    async def _replay(self, key: str, body_sha256: str) -> IngestResponse | None:
        async with self._sessionmaker.begin() as session:
            stored = await repository.idempotency_key(session, key)
        if stored is None:
            return None
        if stored.route != INGEST_ROUTE or stored.request_sha256 != body_sha256:
            raise InvalidRequestError(
                f"Idempotency-Key {key!r} was used for another request body; use a new key"
            )
        return IngestResponse.model_validate(stored.response)

    async def _apply(
        self, session: AsyncSession, items: Sequence[IngestItem], screen: IngestScreen
    ) -> tuple[list[ItemResult], dict[str, int]]:
        versions: dict[str, int] = {}

        async def version_for(domain: str) -> int:
            if domain not in versions:
                versions[domain] = await repository.latest_rag_version(session, domain) + 1
            return versions[domain]

        results: list[ItemResult] = []
        for item in items:
            if isinstance(item, FeedbackItem):
                result = await learning.apply_feedback(session, item, screen)
                await self._correction_document(session, item, result, version_for, screen)
                results.append(result)
            elif isinstance(item, ExampleItem):
                results.append(await learning.apply_example(session, item, self._domains, screen))
            else:
                results.append(await self._apply_document(session, item, version_for))
        return results, versions

    async def _apply_document(
        self, session: AsyncSession, item: DocumentItem, version_for: _VersionFor
    ) -> ItemResult:
        def result(status: str, **extra: object) -> ItemResult:
            return ItemResult.model_validate(
                {"id": item.id, "type": item.type, "status": status, **extra}
            )

        live = await repository.live_document(session, item.id)
        if item.deleted:
            if live is None:
                return result("not_found", detail="no live document with this id")
            version = await version_for(live.domain)
            await self._remove(live, version)
            return result("deleted", domain=live.domain, rag_version=version)
        if item.domain is None or item.text is None or not item.text.strip():
            return result("rejected", detail="a document needs `domain` and non-empty `text`")
        if item.domain not in self._domains:
            known = ", ".join(self._domains)
            return result("rejected", detail=f"unknown domain {item.domain!r}; known: {known}")
        sha = hashlib.sha256(item.text.encode()).hexdigest()
        if live is not None and live.content_sha256 == sha and live.domain == item.domain:
            return result("unchanged", domain=live.domain, rag_version=live.added_in_version)
        version = await version_for(item.domain)
        if live is not None:
            if live.domain != item.domain:
                await self._remove(live, await version_for(live.domain))
            else:
                await self._remove(live, version)
        chunks = await self._index.add_document(
            domain=item.domain,
            doc_id=item.id,
            text=item.text,
            source=item.source or "",
            version=version,
            chunk_size=self._chunk_chars,
            chunk_overlap=self._chunk_overlap,
        )
        await repository.add(
            session,
            Document(
                external_id=item.id,
                domain=item.domain,
                source=item.source,
                content_sha256=sha,
                text=item.text,
                chunk_count=chunks,
                added_in_version=version,
            ),
        )
        status = "updated" if live is not None else "added"
        return result(status, domain=item.domain, rag_version=version, chunks=chunks)

    async def _correction_document(
        self,
        session: AsyncSession,
        item: FeedbackItem,
        result: ItemResult,
        version_for: _VersionFor,
        screen: IngestScreen,
    ) -> None:
        """Facts first in RAG: a correction is a fact document of its domain at once.

        Shadow (whose snapshot pins the new RAG version) answers it right within seconds,
        while the adapter learns it in the next training round. A withdrawn or changed
        correction takes its document with it, and so does one the screen quarantines; the
        document is the redacted text.
        """
        if result.status not in ("added", "updated", "deleted", "quarantined"):
            return
        doc_id = fact_document_id(item.id)
        fact = await learning.correction_fact(session, item.id, screen)
        if fact is None:
            if await repository.live_document(session, doc_id) is not None:
                document = DocumentItem(type="document", id=doc_id, deleted=True)
                await self._apply_document(session, document, version_for)
            return
        document = DocumentItem(
            type="document",
            id=doc_id,
            domain=fact.domain,
            text=fact.text,
            source=f"feedback:{item.id}",
        )
        await self._apply_document(session, document, version_for)

    async def add_facts(self, facts: Sequence[tuple[str, str, str]], *, actor: str) -> str | None:
        """Fact documents `(id, domain, text)` (QA corrections) in one batch; staged to Shadow.

        The texts must have passed the screen already (the trainer screens QA corrections
        before it trains on them or sends them here).
        """
        items: list[IngestItem] = [
            DocumentItem(
                type="document", id=fact_document_id(doc_id), domain=domain, text=text, source=actor
            )
            for doc_id, domain, text in facts
        ]
        if not items:
            return None
        body = json.dumps([[i, d, t] for i, d, t in facts]).encode()
        response = await self.ingest(
            IngestRequest(items=items), caller=system_caller(actor), body=body,
            idempotency_key=None,
        )  # fmt: skip
        return response.shadow_snapshot_id

    async def remove_correction_facts(
        self, feedback_ids: Sequence[str], *, actor: str
    ) -> str | None:
        """Remove the fact documents of these corrections (by feedback id), when live: a cycle
        quarantined what they teach. Staged to Shadow; the last snapshot's id, if any."""
        snapshot_id = None
        ids = list(dict.fromkeys(feedback_ids))
        for start in range(0, len(ids), MAX_ITEMS):
            batch = ids[start : start + MAX_ITEMS]
            items: list[IngestItem] = [
                DocumentItem(type="document", id=fact_document_id(fid), deleted=True)
                for fid in batch
            ]
            body = json.dumps({"remove_correction_facts": batch}).encode()
            response = await self.ingest(
                IngestRequest(items=items), caller=system_caller(actor), body=body,
                idempotency_key=None,
            )  # fmt: skip
            snapshot_id = response.shadow_snapshot_id or snapshot_id
        return snapshot_id

    async def _remove(self, live: Document, version: int) -> None:
        await self._index.remove_document(
            domain=live.domain, doc_id=live.external_id, version=version
        )
        live.removed_in_version = version

    async def _shadow_snapshot(
        self, session: AsyncSession, versions: dict[str, int], actor: str
    ) -> str:
        state = self._releases.state
        parent = await snapshots.get_snapshot(session, state.serving(state.shadow_slot).snapshot_id)
        snapshot = await snapshots.create_snapshot(
            session,
            parent=parent,
            adapters={},
            domains=self._domains,
            actor=actor,
            reason="ingest: RAG versions "
            + ", ".join(f"{d}={v}" for d, v in sorted(versions.items())),
            rag_versions=versions,
        )
        return snapshot.id


class _VersionFor(Protocol):
    async def __call__(self, domain: str) -> int: ...
