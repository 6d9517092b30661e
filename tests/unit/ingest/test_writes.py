"""What a batch writes to the index: planned once, then checked when it commits."""

from __future__ import annotations

import pytest

from twinloop.db.models import Document
from twinloop.errors import InvalidRequestError
from twinloop.ingest.writes import (
    UNRESERVED,
    Addition,
    DocumentWrites,
    IngestConflictError,
    Removal,
)


def _live(doc_id: str = "d1", domain: str = "law") -> Document:
    return Document(external_id=doc_id, domain=domain, content_sha256="x", text="old",
                    added_in_version=1)  # fmt: skip


def test_planning_collects_the_writes_and_the_domains_without_versions() -> None:
    plan = DocumentWrites.plan()
    live = _live(domain="med")

    plan.remove(live, plan.version("med"))
    chunks = plan.add(domain="law", doc_id="d1", text="new", source="s")

    assert plan.writes == [Removal("med", "d1"), Addition("law", "d1", "new", "s")]
    assert plan.domains == {"law", "med"}
    assert (chunks, live.removed_in_version) == (0, UNRESERVED)


def test_planning_refuses_a_document_written_twice() -> None:
    plan = DocumentWrites.plan()
    plan.add(domain="law", doc_id="fact:f1", text="a", source="s")

    with pytest.raises(InvalidRequestError, match="'fact:f1'"):
        plan.add(domain="law", doc_id="fact:f1", text="b", source="s")


def test_committing_hands_out_versions_and_chunks_for_exactly_the_planned_writes() -> None:
    planned = [Removal("law", "d1"), Addition("law", "d1", "new", "s")]
    writes = DocumentWrites.commit(planned, versions={"law": 7}, chunks={"d1": 3})
    live = _live()

    writes.remove(live, writes.version("law"))
    chunks = writes.add(domain="law", doc_id="d1", text="new", source="s")
    writes.check_complete()

    assert (live.removed_in_version, chunks) == (7, 3)


@pytest.mark.parametrize(
    "differs",
    ["other text", "other domain", "missing write"],
)
def test_committing_anything_but_the_plan_is_a_conflict(differs: str) -> None:
    planned: list[Removal | Addition] = [Addition("law", "d1", "new", "s")]
    writes = DocumentWrites.commit(planned, versions={"law": 7}, chunks={"d1": 1})

    with pytest.raises(IngestConflictError) as conflict:
        if differs == "other text":
            writes.add(domain="law", doc_id="d1", text="newer", source="s")
        elif differs == "other domain":
            writes.version("med")
        else:
            writes.check_complete()
    assert conflict.value.status_code == 409
