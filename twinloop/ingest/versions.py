"""RAG versions: reserved before an ingest writes, committed with its batch, or undone.

A reader pinned at version `p` sees the chunks with `added_in <= p < removed_in`
(rag/store.py), so what an ingest writes at version `v` is invisible until a snapshot pins
`v` or a later version. The rules here keep every version a snapshot can pin whole:

- **Reserved on its own.** A batch reserves the next version of each domain it changes in
  a transaction of its own, before it writes anything: a failed batch never lends its
  version to the next one. A version is one batch's alone, so undoing it needs no list
  of what it wrote (`undo_version` takes back everything at that version).
- **One open version per domain.** A domain has at most one version that is `reserved`
  (a batch is writing) or `failed` (to be undone), in every process: a unique index on
  the open rows makes a second reservation wait (then 409). So every committed version
  is below any open one, and the versions a snapshot pins (committed ones: ingest's own,
  the trainer's `latest_rag_version`) never show an open version's chunks.
- **Undone on failure.** A batch that fails after reserving marks its versions `failed`,
  undoes them in the index and marks them `abandoned`. If the undo fails too, the version
  stays `failed` — invisible, being above every committed version — and the next
  reservation in that domain undoes it first (and fails, 503, while it cannot).
- **A lease.** A writer that dies leaves its version `reserved`; once `lease_s` has passed
  since the reservation, the next reservation fails and undoes it. The writer itself
  starts no index write after `lease_s - write_timeout_s` (`Reservation.check_time`), so
  the undo never races a late write, and its commit moves only a still `reserved` version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from rag.errors import KnowledgeStoreError
from twinloop.db.base import utcnow
from twinloop.db.models import RagVersion
from twinloop.db.session import SessionMaker
from twinloop.errors import TwinloopError
from twinloop.ingest import repository
from twinloop.states import RagVersionState

log = structlog.get_logger(__name__)

BUSY_POLL_S = 0.2


class DomainBusyError(TwinloopError):
    """Another ingest is writing into a domain this batch changes."""

    status_code = 409


class IngestTimeoutError(TwinloopError):
    """The batch held its RAG versions longer than the lease; nothing of it was stored."""

    status_code = 503


class VersionUndo(Protocol):
    """What the versions need of the index (rag.store.KnowledgeStore)."""

    async def undo_version(self, *, domain: str, version: int) -> None: ...


@dataclass(frozen=True)
class Reservation:
    versions: dict[str, int]
    """Domain -> the version this batch writes at."""
    write_until: float
    """`time.monotonic()` after which no index write may start."""

    def check_time(self) -> None:
        if time.monotonic() > self.write_until:
            raise IngestTimeoutError(
                "the batch took too long to write its chunks (RAG versions "
                + _named(self.versions)
                + "); nothing of it was stored; send it again, or in smaller batches"
            )


class RagVersions:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        index: VersionUndo,
        lease_s: float,
        write_timeout_s: float,
        busy_wait_s: float = 30.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._index = index
        self._lease_s = lease_s
        self._write_s = lease_s - write_timeout_s
        self._busy_wait_s = busy_wait_s

    async def reserve(self, domains: Collection[str], *, actor: str) -> Reservation:
        """The next version of each domain, committed as `reserved`: all or none.

        Waits up to `busy_wait_s` while another batch writes into one of them.
        """
        give_up = time.monotonic() + self._busy_wait_s
        while True:
            busy = await self._clear(domains)
            if not busy:
                started = time.monotonic()
                try:
                    async with self._sessionmaker.begin() as session:
                        versions = await self._insert(session, domains, actor)
                except IntegrityError:
                    pass  # another process reserved one of them at the same moment
                else:
                    return Reservation(versions=versions, write_until=started + self._write_s)
            if time.monotonic() >= give_up:
                raise DomainBusyError(_busy_message(busy, self._lease_s))
            await asyncio.sleep(BUSY_POLL_S)

    async def commit(self, session: AsyncSession, reservation: Reservation) -> None:
        """In the batch's transaction: its versions become committed (pinnable)."""
        for domain, version in reservation.versions.items():
            moved = await repository.move_rag_version(
                session,
                domain,
                version,
                from_states=(RagVersionState.RESERVED,),
                to=RagVersionState.COMMITTED,
            )
            if not moved:
                raise IngestTimeoutError(
                    f"the batch held RAG version {version} of {domain!r} past its lease of "
                    f"{self._lease_s:g} s and it was abandoned; nothing of the batch was "
                    "stored; send it again"
                )

    async def abandon(self, reservation: Reservation) -> None:
        """After a failure: undo the batch's versions. Never raises; what it cannot do now
        the next reservation in the domain does."""
        for domain, version in reservation.versions.items():
            try:
                async with self._sessionmaker.begin() as session:
                    await repository.move_rag_version(
                        session,
                        domain,
                        version,
                        from_states=(RagVersionState.RESERVED,),
                        to=RagVersionState.FAILED,
                    )
                    row = await session.get(RagVersion, (domain, version))
                    # Committed after all (the error came after the commit): keep it.
                    failed = row is not None and row.state == RagVersionState.FAILED
                if failed:
                    await self._undo(domain, version)
            except Exception as e:
                log.warning(
                    "a failed ingest's RAG version is left to undo",
                    domain=domain,
                    version=version,
                    error=f"{type(e).__name__}: {e}",
                )

    # -- internals ------------------------------------------------------------------

    async def _clear(self, domains: Collection[str]) -> list[RagVersion]:
        """Undo the failed versions of `domains` (reservations past their lease first);
        returns the reservations still held by a writer."""
        async with self._sessionmaker.begin() as session:
            await repository.fail_expired_reservations(
                session, domains, utcnow() - timedelta(seconds=self._lease_s)
            )
            open_versions = await repository.open_rag_versions(session, domains)
        for row in open_versions:
            if row.state == RagVersionState.FAILED:
                await self._undo(row.domain, row.version)
        return [r for r in open_versions if r.state == RagVersionState.RESERVED]

    async def _undo(self, domain: str, version: int) -> None:
        try:
            await self._index.undo_version(domain=domain, version=version)
        except TwinloopError as e:
            raise KnowledgeStoreError(
                f"RAG version {version} of {domain!r}, left by a failed ingest, could not be "
                f"undone yet ({e.message}); no ingest into {domain!r} is possible until it is"
            ) from e
        async with self._sessionmaker.begin() as session:
            await repository.move_rag_version(
                session,
                domain,
                version,
                from_states=(RagVersionState.FAILED,),
                to=RagVersionState.ABANDONED,
            )
        log.info("a failed ingest's RAG version was undone", domain=domain, version=version)

    @staticmethod
    async def _insert(
        session: AsyncSession, domains: Collection[str], actor: str
    ) -> dict[str, int]:
        versions: dict[str, int] = {}
        for domain in sorted(domains):
            versions[domain] = await repository.next_rag_version(session, domain)
            await repository.add(
                session,
                RagVersion(
                    domain=domain,
                    version=versions[domain],
                    state=RagVersionState.RESERVED,
                    actor=actor,
                ),
            )
        return versions


def _busy_message(held: list[RagVersion], lease_s: float) -> str:
    if not held:
        return "another ingest reserved the same domain at the same moment; send the batch again"
    versions = "; ".join(
        f"RAG version {r.version} of {r.domain!r}, reserved at {r.created_at:%H:%M:%S} UTC"
        for r in held
    )
    return (
        f"another ingest is writing into the same domain ({versions}; a process that died "
        f"holds it for {lease_s:g} s); send the batch again shortly"
    )


def _named(versions: dict[str, int]) -> str:
    return ", ".join(f"{d}={v}" for d, v in sorted(versions.items()))
