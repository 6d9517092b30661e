"""Making snapshots: immutable descriptions of what a slot serves, and their lineage.

A snapshot derived from what a slot serves is made inside `ReleaseController.change_shadow`'s
`derive`, so it is made from the release in force and staged only while that release is.

A child that serves the same adapter in every domain (an ingest's newer RAG versions, new
router rules) stands for its parent wherever a decision was made on the adapters: the QA
verdict (`QaService.snapshot_verdict`) and the training cycle behind a canary
(`twinloop.canary`) follow such a chain (`same_adapter_lineage`); a child with other
adapters breaks it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Snapshot
from twinloop.errors import InvalidRequestError, NotFoundError
from twinloop.releases import repository


async def create_snapshot(
    session: AsyncSession,
    *,
    parent: Snapshot,
    adapters: dict[str, str | None],
    domains: Sequence[str],
    actor: str,
    reason: str,
    rag_versions: dict[str, int] | None = None,
    router_rules_version: int | None = None,
) -> Snapshot:
    """A new snapshot: `parent` with the named domains' adapters replaced.

    Every adapter must exist and belong to the domain it is put in; RAG versions
    (unless given) and router rules are carried over from the parent. A named tainted
    adapter is refused; an inherited one is not carried over (its domain falls back to
    the base model, and the reason says so), so staging new documents or a deletion never
    fails on it and never serves it again.
    """
    unknown = sorted((set(adapters) | set(rag_versions or {})) - set(domains))
    if unknown:
        raise InvalidRequestError(
            f"unknown domain(s) {', '.join(unknown)}; known domains: {', '.join(domains)}"
        )
    merged = {**parent.adapters, **adapters}
    rows = await repository.adapters_by_id(session, [a for a in merged.values() if a])
    for domain, adapter_id in adapters.items():
        if adapter_id is None:
            continue
        row = rows.get(adapter_id)
        if row is None:
            raise NotFoundError(f"adapter {adapter_id} is not registered")
        if row.domain != domain:
            raise InvalidRequestError(
                f"adapter {adapter_id} was registered for {row.domain!r}, not {domain!r}"
            )
        if row.tainted:
            raise InvalidRequestError(f"adapter {adapter_id} is tainted and cannot be served")
    dropped = {
        domain: rows[adapter_id]
        for domain, adapter_id in merged.items()
        if domain not in adapters and adapter_id in rows and rows[adapter_id].tainted
    }
    if dropped:
        names = ", ".join(f"{row.name} for {domain}" for domain, row in sorted(dropped.items()))
        reason += f" (tainted, not carried over: {names})"
    snapshot = Snapshot(
        base_model=parent.base_model,
        adapters={d: a for d, a in merged.items() if a and d not in dropped},
        rag_versions={**parent.rag_versions, **(rag_versions or {})},
        router_rules_version=router_rules_version or parent.router_rules_version,
        parent_id=parent.id,
        created_by=actor,
        reason=reason,
    )
    await repository.add(session, snapshot)
    return snapshot


def served_adapters(snapshot: Snapshot) -> dict[str, str]:
    """domain -> adapter version id the snapshot serves (domains on the base model left out):
    what "serves the same adapters" compares, like `SlotSnapshot.adapter_ids`."""
    return {domain: a for domain, a in snapshot.adapters.items() if a}


async def same_adapter_lineage(session: AsyncSession, snapshot_id: str) -> AsyncIterator[Snapshot]:
    """`snapshot_id`'s snapshot, then its parent, grandparent, ... for as long as each serves
    the same adapters as its child (`served_adapters`); nothing if it does not exist.

    Lazy, one lookup per step: a caller stops at the first snapshot it was looking for.
    """
    current = await repository.get_snapshot(session, snapshot_id)
    while current is not None:
        yield current
        parent = (
            await repository.get_snapshot(session, current.parent_id) if current.parent_id else None
        )
        if parent is None or served_adapters(parent) != served_adapters(current):
            return
        current = parent


async def stands_for(session: AsyncSession, snapshot_id: str, ancestor_id: str) -> bool:
    """Whether `snapshot_id` is `ancestor_id` or a descendant of it through snapshots that
    all serve its adapters: what was decided on `ancestor_id`'s adapters holds for it."""
    if snapshot_id == ancestor_id:
        return True
    ancestor = await repository.get_snapshot(session, ancestor_id)
    if ancestor is None:
        return False
    async for snapshot in same_adapter_lineage(session, snapshot_id):
        if served_adapters(snapshot) != served_adapters(ancestor):
            return False  # the whole chain serves the same adapters: no need to walk it
        if snapshot.id == ancestor_id:
            return True
    return False


async def get_snapshot(session: AsyncSession, snapshot_id: str) -> Snapshot:
    snapshot = await repository.get_snapshot(session, snapshot_id)
    if snapshot is None:
        raise NotFoundError(f"snapshot {snapshot_id} does not exist")
    return snapshot
