"""Ingestion: documents with versioned visibility; feedback and examples (see learning.py).

Every batch that changes a domain's documents gives that domain a new RAG
version: new chunks are tagged `added_in=v`, superseded or deleted ones get
`removed_in=v`. A reader pinned at `p` sees `added_in <= p < removed_in`
(rag/store.py), so nothing written at `v` shows until a snapshot pins `v`. A new
shadow snapshot pins the new versions and is staged, so Shadow sees the change at
once; Active keeps its pinned versions until a swap, and a rollback pins the old
ones again.

A batch is atomic from the reader's side, and holds the database only briefly:

1. Check: ids repeated in the batch (or a document named like the fact document of a
   feedback item in it) are refused, 422, before anything is read or written.
2. Plan: the batch's rules (`_apply`: learning.py for feedback and examples,
   `_apply_document` for documents and corrections' facts) run in a transaction that is
   rolled back, and `DocumentWrites` (writes.py) collects what they would write to the
   index. A batch that writes nothing to the index commits this transaction instead and
   goes on to step 5. (The rules only touch the database, so running them twice is cheap.)
3. Prepare: the new texts are chunked and embedded, with no transaction open: /answer,
   the release watcher and the trainer use the database meanwhile.
4. Reserve, write, commit: each changed domain's next version is reserved in its own
   transaction (versions.py: never lent to another batch, one writer per domain in every
   process); the chunks are written to the index at those versions; one short
   transaction runs the rules again, checks they write exactly what was planned (409
   otherwise), and commits the batch with its versions. Any failure after the reservation
   undoes the versions in the index (a version is one batch's alone, so everything at it
   goes), and a version whose undo fails stays out of every snapshot until the next
   ingest into its domain undoes it.
5. Stage: Shadow gets a snapshot pinning every committed version no staging has shown
   yet, derived from what Shadow serves at that moment under the release controller's lock
   (`ReleaseController.change_shadow`: derived again if the trainer or another gateway
   staged first, so it never takes their change back). The data is stored whatever happens
   here: a failure answers 202 with `staging: pending` and its reason, and the versions
   stay unstaged until a replay with the same Idempotency-Key, the next ingest (of
   anything: each one stages what is pending), the next training cycle's snapshot
   (which pins the newest versions) or a gateway starting (`stage_left_pending`: one
   killed between commit and staging) shows them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from rag.store import PreparedDocument
from twinloop.cleaning.config import CleaningConfig
from twinloop.db.models import Document, IdempotencyKey
from twinloop.db.session import SessionMaker
from twinloop.errors import InvalidRequestError, PayloadTooLargeError, TwinloopError
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
    Staging,
)
from twinloop.ingest.screening import IngestScreen
from twinloop.ingest.versions import RagVersions, Reservation, VersionUndo
from twinloop.ingest.writes import Addition, DocumentWrites, Removal, Write
from twinloop.metrics import Metrics
from twinloop.releases import snapshots
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import ReleaseState
from twinloop.settings import Settings

log = structlog.get_logger(__name__)

INGEST_ROUTE = "ingest"


def fact_document_id(key: str) -> str:
    """The document id of a taught fact; ids stay within the 128 characters a document has."""
    doc_id = f"{FACT_PREFIX}{key}"
    if len(doc_id) <= MAX_ID_CHARS:
        return doc_id
    return f"{FACT_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}"


class StagingPendingError(TwinloopError):
    """Stored, but not on Shadow yet (for callers that need it there at once)."""

    status_code = 502


class DocumentIndex(VersionUndo, Protocol):
    """The vector side of documents (rag.store.KnowledgeStore, or a fake in unit tests)."""

    async def prepare_document(
        self, *, doc_id: str, text: str, chunk_size: int, chunk_overlap: int
    ) -> PreparedDocument: ...

    async def write_document(
        self, *, domain: str, doc_id: str, document: PreparedDocument, source: str, version: int
    ) -> int: ...

    async def remove_document(self, *, domain: str, doc_id: str, version: int) -> int: ...


@dataclass(frozen=True)
class _Staged:
    """What staging did for one request: `status` null when there was nothing to stage."""

    status: Staging | None
    snapshot_id: str | None = None
    error: str | None = None


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
        lease_s: float = 120.0,
        write_timeout_s: float = 30.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cleaning = cleaning or CleaningConfig()
        self._index = index
        self._versions = RagVersions(
            sessionmaker=sessionmaker, index=index, lease_s=lease_s, write_timeout_s=write_timeout_s
        )
        self._releases = releases
        self._metrics = metrics
        self._domains = list(domains)
        self._chunk_chars = chunk_chars
        self._chunk_overlap = chunk_overlap
        self._max_text_chars = max_text_chars
        # One batch at a time per process (versions.py keeps processes apart).
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
            lease_s=settings.rag.ingest_lease_s,
            write_timeout_s=settings.rag.request_timeout_s,
        )

    async def ingest(
        self,
        request: IngestRequest,
        *,
        caller: Caller,
        body: bytes,
        idempotency_key: str | None,
    ) -> IngestResponse:
        """Store the batch durably, then stage a shadow snapshot that sees it (module doc).

        Nothing is stored unless `caller` may send every item (`permissions.py`).
        """
        actor = caller.actor
        self._check_sizes(request.items)
        _check_unique_ids(request.items)
        body_sha256 = hashlib.sha256(body).hexdigest()
        async with self._lock:
            await self._authorize(caller, request)
            if idempotency_key is not None:
                replay = await self._replay(idempotency_key, body_sha256, actor)
                if replay is not None:
                    return replay
            key = None
            if idempotency_key is not None:
                key = IdempotencyKey(
                    key=idempotency_key,
                    route=INGEST_ROUTE,
                    request_sha256=body_sha256,
                    status_code=202,
                    response={},
                )
            screen = IngestScreen(self._cleaning)
            results, changed = await self._store(request.items, screen, key=key, actor=actor)
            for result in results:
                self._metrics.ingested_items.labels(result.type, result.status).inc()
            for rule, n in screen.quarantined.items():
                self._metrics.screened_items.labels(f"quarantined.{rule}").inc(n)
            for rule, n in screen.rejected.items():
                self._metrics.screened_items.labels(f"rejected.{rule}").inc(n)
            for kind, n in screen.redactions.items():
                self._metrics.redactions.labels(kind).inc(n)
            staged = await self._stage_pending(actor, changed=changed)
            response = _response(results, staged)
            if key is not None:
                await self._remember(key.key, response)
            return response

    def _check_sizes(self, items: Sequence[IngestItem]) -> None:
        for item in items:
            if (
                isinstance(item, DocumentItem)
                and item.text is not None
                and len(item.text) > self._max_text_chars
            ):
                raise PayloadTooLargeError(
                    f"item {item.id!r} has {len(item.text)} characters; the limit is "
                    f"{self._max_text_chars}"
                )

    async def _authorize(self, caller: Caller, request: IngestRequest) -> None:
        async with self._sessionmaker.begin() as session:
            try:
                await permissions.authorize(session, caller, request.items)
            except PermissionDeniedError:
                self._metrics.auth_failures.labels(f"/{INGEST_ROUTE}", "forbidden").inc()
                raise

    async def _replay(self, key: str, body_sha256: str, actor: str) -> IngestResponse | None:
        """The stored answer to `key`; a batch whose staging was pending is staged now."""
        async with self._sessionmaker.begin() as session:
            stored = await repository.idempotency_key(session, key)
        if stored is None:
            return None
        if stored.route != INGEST_ROUTE or stored.request_sha256 != body_sha256:
            raise InvalidRequestError(
                f"Idempotency-Key {key!r} was used for another request body; use a new key"
            )
        response = IngestResponse.model_validate(stored.response)
        if response.staging != "pending":
            return response
        staged = await self._stage_pending(actor, changed=True)
        response = _response(response.items, staged)
        if staged.status == "staged":
            await self._remember(key, response)
        return response

    async def _store(
        self,
        items: Sequence[IngestItem],
        screen: IngestScreen,
        *,
        key: IdempotencyKey | None,
        actor: str,
    ) -> tuple[list[ItemResult], bool]:
        """Steps 2-4 of the module docstring: the results, and whether the index changed."""
        plan = DocumentWrites.plan()
        async with self._sessionmaker() as session:
            results = await self._apply(session, items, plan, screen)
            if not plan.writes:  # nothing for the index: the plan is the batch
                await self._keep_key(session, key, _response(results, _Staged(None)))
                await session.commit()
                return results, False
            await session.rollback()
        # The commit runs the rules again: the screen keeps its verdicts, but counts once.
        screen.forget_counts()
        prepared = await self._prepare(plan.writes)
        reservation = await self._versions.reserve(plan.domains, actor=actor)
        try:
            await self._write(plan.writes, prepared, reservation)
            async with self._sessionmaker.begin() as session:
                writes = DocumentWrites.commit(
                    plan.writes,
                    versions=reservation.versions,
                    chunks={doc_id: len(p.chunks) for doc_id, p in prepared.items()},
                )
                results = await self._apply(session, items, writes, screen)
                writes.check_complete()
                await self._versions.commit(session, reservation)
                await self._keep_key(session, key, _response(results, _Staged("pending")))
        except BaseException:
            await self._versions.abandon(reservation)
            raise
        return results, True

    async def _prepare(self, writes: Sequence[Write]) -> dict[str, PreparedDocument]:
        """Chunk and embed every addition; no transaction is open."""
        return {
            write.doc_id: await self._index.prepare_document(
                doc_id=write.doc_id,
                text=write.text,
                chunk_size=self._chunk_chars,
                chunk_overlap=self._chunk_overlap,
            )
            for write in writes
            if isinstance(write, Addition)
        }

    async def _write(
        self,
        writes: Sequence[Write],
        prepared: Mapping[str, PreparedDocument],
        reservation: Reservation,
    ) -> None:
        """The planned writes, at the reserved versions (invisible until a snapshot pins them)."""
        for write in writes:
            reservation.check_time()
            version = reservation.versions[write.domain]
            if isinstance(write, Removal):
                await self._index.remove_document(
                    domain=write.domain, doc_id=write.doc_id, version=version
                )
            else:
                await self._index.write_document(
                    domain=write.domain,
                    doc_id=write.doc_id,
                    document=prepared[write.doc_id],
                    source=write.source,
                    version=version,
                )

    async def _apply(
        self,
        session: AsyncSession,
        items: Sequence[IngestItem],
        writes: DocumentWrites,
        screen: IngestScreen,
    ) -> list[ItemResult]:
        results: list[ItemResult] = []
        for item in items:
            if isinstance(item, FeedbackItem):
                result = await learning.apply_feedback(session, item, screen)
                await self._correction_document(session, item, result, writes, screen)
                results.append(result)
            elif isinstance(item, ExampleItem):
                results.append(await learning.apply_example(session, item, self._domains, screen))
            else:
                results.append(await self._apply_document(session, item, writes, screen))
        return results

    async def _apply_document(
        self,
        session: AsyncSession,
        item: DocumentItem,
        writes: DocumentWrites,
        screen: IngestScreen,
    ) -> ItemResult:
        def result(status: str, **extra: object) -> ItemResult:
            return ItemResult.model_validate(
                {"id": item.id, "type": item.type, "status": status, **extra}
            )

        live = await repository.live_document(session, item.id)
        if item.deleted:
            if live is None:
                return result("not_found", detail="no live document with this id")
            version = writes.version(live.domain)
            writes.remove(live, version)
            return result("deleted", domain=live.domain, rag_version=version)
        if item.domain is None or item.text is None or not item.text.strip():
            return result("rejected", detail="a document needs `domain` and non-empty `text`")
        if item.domain not in self._domains:
            known = ", ".join(self._domains)
            return result("rejected", detail=f"unknown domain {item.domain!r}; known: {known}")
        screened = await screen.document(item.text)
        if screened.rule is not None:
            reason = f"{screened.rule}, {screened.reason}"
            return result("rejected", detail=f"the screen stopped it ({reason})")
        # Of the text as sent: sending the same text again is `unchanged`.
        sha = hashlib.sha256(item.text.encode()).hexdigest()
        if live is not None and live.content_sha256 == sha and live.domain == item.domain:
            return result("unchanged", domain=live.domain, rag_version=live.added_in_version)
        version = writes.version(item.domain)
        if live is not None:
            writes.remove(live, writes.version(live.domain))
        chunks = writes.add(
            domain=item.domain, doc_id=item.id, text=screened.text, source=item.source or ""
        )
        await repository.add(
            session,
            Document(
                external_id=item.id,
                domain=item.domain,
                source=item.source,
                content_sha256=sha,
                text=screened.text,
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
        writes: DocumentWrites,
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
                await self._apply_document(session, document, writes, screen)
            return
        document = DocumentItem(
            type="document",
            id=doc_id,
            domain=fact.domain,
            text=fact.text,
            source=f"feedback:{item.id}",
        )
        await self._apply_document(session, document, writes, screen)

    async def add_facts(self, facts: Sequence[tuple[str, str, str]], *, actor: str) -> str | None:
        """Fact documents `(id, domain, text)` (QA corrections) in one batch; staged to Shadow.

        The texts must have passed the screen already (the trainer screens QA corrections
        before it trains on them or sends them here). Raises `StagingPendingError` when they
        are stored but could not be staged.
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
        return _on_shadow(response)

    async def remove_correction_facts(
        self, feedback_ids: Sequence[str], *, actor: str
    ) -> str | None:
        """Remove the fact documents of these corrections (by feedback id), when live: a cycle
        quarantined what they teach. Staged to Shadow; the last snapshot's id, if any.
        Raises `StagingPendingError` when they are removed but Shadow still shows them."""
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
            snapshot_id = _on_shadow(response) or snapshot_id
        return snapshot_id

    async def stage_left_pending(self, *, actor: str) -> str | None:
        """Stage what a gateway left unstaged when it died between a batch's commit and its
        staging, so a restarted gateway shows Shadow every committed version at once rather
        than at a replay of the batch, the next ingest or the next cycle. Never raises: what
        fails now stays pending for those. Returns the staging status (None: nothing left)."""
        return (await self._stage_pending(actor, changed=False)).status

    async def _stage_pending(self, actor: str, *, changed: bool) -> _Staged:
        """Step 5: show Shadow every committed version no staging has shown yet.

        The snapshot is derived by the release controller's `change_shadow`, under its lock,
        from what Shadow serves then (derived again if the trainer or another gateway stages
        first), so it never takes back adapters or versions staged meanwhile.
        Never raises: the batch is stored, and a failure leaves the versions to the retry.
        """
        shown: dict[str, int] = {}

        async def derive(session: AsyncSession, state: ReleaseState) -> str:
            shown.clear()
            shown.update(await repository.unstaged_rag_versions(session))
            shadow = state.serving(state.shadow_slot)
            # A domain no longer configured cannot be pinned; its versions just end.
            behind = {
                d: v
                for d, v in shown.items()
                if d in self._domains and shadow.rag_versions.get(d, 0) < v
            }
            if not behind:
                return shadow.snapshot_id
            return await self._shadow_snapshot(session, shadow.snapshot_id, behind, actor)

        try:
            async with self._sessionmaker.begin() as session:
                pending = await repository.unstaged_rag_versions(session)
            if pending:
                state = await self._releases.change_shadow(
                    derive, actor=actor, reason="ingest: new documents"
                )
                async with self._sessionmaker.begin() as session:
                    await repository.mark_rag_versions_staged(session, shown)
            else:
                state = self._releases.state
        except Exception as e:
            reason = e.message if isinstance(e, TwinloopError) else "internal error"
            log.warning("ingest stored, staging pending", error=f"{type(e).__name__}: {e}")
            return _Staged("pending", error=f"{type(e).__name__}: {reason}")
        if not pending and not changed:
            return _Staged(None)
        return _Staged("staged", snapshot_id=state.serving(state.shadow_slot).snapshot_id)

    async def _shadow_snapshot(
        self, session: AsyncSession, shadow_id: str, versions: dict[str, int], actor: str
    ) -> str:
        parent = await snapshots.get_snapshot(session, shadow_id)
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

    async def _remember(self, key: str, response: IngestResponse) -> None:
        """What a replay of `key` answers from now on. Never raises: the batch is stored, and
        a replay of the answer kept at the commit (`staging: pending`) stages it again."""
        try:
            async with self._sessionmaker.begin() as session:
                stored = await repository.idempotency_key(session, key)
                if stored is not None:
                    stored.response = response.model_dump(mode="json")
        except Exception as e:
            log.warning("ingest answer not kept for replay", error=f"{type(e).__name__}: {e}")

    @staticmethod
    async def _keep_key(
        session: AsyncSession, key: IdempotencyKey | None, response: IngestResponse
    ) -> None:
        if key is not None:
            key.response = response.model_dump(mode="json")
            await repository.add(session, key)


def _response(results: Sequence[ItemResult], staged: _Staged) -> IngestResponse:
    return IngestResponse(
        items=list(results),
        shadow_snapshot_id=staged.snapshot_id,
        staging=staged.status,
        staging_error=staged.error,
    )


def _on_shadow(response: IngestResponse) -> str | None:
    """The snapshot that shows the batch, for callers that need it on Shadow at once."""
    if response.staging == "pending":
        raise StagingPendingError(
            f"the changes are stored but Shadow does not show them yet: {response.staging_error}"
        )
    return response.shadow_snapshot_id


def _check_unique_ids(items: Sequence[IngestItem]) -> None:
    """Refuse a batch that names one thing twice: an id of one type, or a document with the
    id of the fact document of a feedback item in the same batch."""
    names = [(item.type, item.id) for item in items]
    names += [("document", fact_document_id(i.id)) for i in items if isinstance(i, FeedbackItem)]
    repeated = sorted({name for name, n in Counter(names).items() if n > 1})
    if repeated:
        listed = ", ".join(f"{kind} {item_id!r}" for kind, item_id in repeated)
        raise InvalidRequestError(
            f"the batch names these more than once: {listed}; send each id once per batch "
            "(a feedback item's correction is the document fact:<id>)"
        )
