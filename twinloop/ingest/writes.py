"""The index writes of one batch: collected when it is planned, checked when it commits.

The batch's rules (`IngestService._apply`) run twice: once to plan, in a transaction that
is rolled back, and once for real, after the chunks are written. Both times they tell a
`DocumentWrites` what they would write to the index. Planning collects the list (and
refuses a document id written twice); committing hands out the reserved versions and the
prepared chunk counts, and checks that the rules asked for exactly the planned writes:
anything else means the documents changed in between, and the batch is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twinloop.db.models import Document
from twinloop.errors import InvalidRequestError, TwinloopError

# The version planned writes carry: the real one is reserved after planning.
UNRESERVED = 0


@dataclass(frozen=True)
class Addition:
    """New chunks for a document (its live chunks in `domain` are superseded)."""

    domain: str
    doc_id: str
    text: str
    source: str


@dataclass(frozen=True)
class Removal:
    """A document's live chunks in `domain` hidden from the new version on."""

    domain: str
    doc_id: str


Write = Addition | Removal


class IngestConflictError(TwinloopError):
    """The documents changed between planning the batch and committing it."""

    status_code = 409


class DocumentWrites:
    def __init__(
        self,
        *,
        planned: list[Write] | None = None,
        versions: Mapping[str, int] | None = None,
        chunks: Mapping[str, int] | None = None,
    ) -> None:
        self._planning = planned is None
        self._planned = planned or []
        self._versions = versions or {}
        self._chunks = chunks or {}
        self.writes: list[Write] = []

    @classmethod
    def plan(cls) -> DocumentWrites:
        return cls()

    @classmethod
    def commit(
        cls, planned: list[Write], *, versions: Mapping[str, int], chunks: Mapping[str, int]
    ) -> DocumentWrites:
        """Checks the writes against `planned`; `chunks`: prepared chunk count per doc id."""
        return cls(planned=planned, versions=versions, chunks=chunks)

    @property
    def domains(self) -> set[str]:
        return {w.domain for w in self.writes}

    def version(self, domain: str) -> int:
        """The RAG version this batch writes `domain` at."""
        if self._planning:
            return UNRESERVED
        if domain not in self._versions:
            raise self._conflict()
        return self._versions[domain]

    def remove(self, live: Document, version: int) -> None:
        """Hide `live` from `version` on."""
        self._record(Removal(domain=live.domain, doc_id=live.external_id))
        live.removed_in_version = version

    def add(self, *, domain: str, doc_id: str, text: str, source: str) -> int:
        """Write `text` as `doc_id`; returns its number of chunks (0 while planning)."""
        addition = Addition(domain=domain, doc_id=doc_id, text=text, source=source)
        if self._planning and any(
            isinstance(w, Addition) and w.doc_id == doc_id for w in self.writes
        ):
            raise InvalidRequestError(
                f"document {doc_id!r} would be written twice by this batch (a document with "
                "the id of a correction's fact document?); send it in another batch"
            )
        self._record(addition)
        return 0 if self._planning else self._chunks[doc_id]

    def check_complete(self) -> None:
        """After the rules ran for real: they wrote all that was planned."""
        if self.writes != self._planned:
            raise self._conflict()

    def _record(self, write: Write) -> None:
        if not self._planning:
            position = len(self.writes)
            if position >= len(self._planned) or self._planned[position] != write:
                raise self._conflict()
        self.writes.append(write)

    @staticmethod
    def _conflict() -> IngestConflictError:
        return IngestConflictError(
            "the documents of this batch changed while it was being written (another ingest "
            "of the same ids?); nothing of it was stored; send it again"
        )
