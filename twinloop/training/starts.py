"""What each domain's adapter starts from in a cycle: the base model, or (`trainer.continual`)
the adapter Active serves for that domain.

A domain grows from Active's adapter only when every check passes, in this order, and
otherwise starts from the base with the reason recorded in the cycle's `starts` (and counted
in `twinloop_training_starts_total` by `why`):

1. `trainer.continual` is on (`off`);
2. Active serves an adapter for the domain (`no_active_adapter`);
3. that adapter is not tainted (`tainted`): one trained on deleted data is never grown from,
   or the new adapter would carry what the deletion removed;
4. a verified copy can be fetched from the artifact store (`unreadable`): the same fetch step
   engines get, which hashes the files against the registered sha256;
5. its LoRA has the shape this trainer trains (`incompatible`): rank, alpha, target modules.

Chosen again each time the cycle trains (a resumed cycle, a correction round), from the
release in force then; the new adapter's `grown_from_id` records what it did start from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from adapters.artifacts import ArtifactStore, sync_adapter
from twinloop.errors import TwinloopError
from twinloop.registry import repository as registry_repository
from twinloop.releases.state import SlotSnapshot
from twinloop.training.protocols import AdapterTrainer, StartingAdapter


class StartKind(StrEnum):
    BASE = "base"
    CONTINUAL = "continual"


class Why(StrEnum):
    """Why a domain starts where it does (the metric's `why` label)."""

    GROWN = "grown"
    OFF = "off"
    NO_ACTIVE_ADAPTER = "no_active_adapter"
    TAINTED = "tainted"
    UNREADABLE = "unreadable"
    INCOMPATIBLE = "incompatible"


@dataclass(frozen=True)
class Start:
    """Where one domain's adapter starts, and why."""

    kind: StartKind
    why: Why
    reason: str
    adapter_id: str | None = None
    sha256: str | None = None
    path: Path | None = None
    """The verified local copy a continual start trains from, once fetched."""

    @property
    def adapter(self) -> StartingAdapter | None:
        """What the trainer grows from; None for a start from the base."""
        if self.kind is not StartKind.CONTINUAL or self.path is None or self.sha256 is None:
            return None
        return StartingAdapter(path=self.path, sha256=self.sha256)

    def report(self) -> dict[str, Any]:
        """What the cycle records under `starts.<domain>`."""
        return {
            "start": self.kind.value,
            "why": self.why.value,
            "adapter_id": self.adapter_id,
            "reason": self.reason,
        }


def _base(why: Why, reason: str, adapter_id: str | None = None) -> Start:
    return Start(StartKind.BASE, why, reason, adapter_id=adapter_id)


async def candidates(
    session: AsyncSession, active: SlotSnapshot, domains: list[str], *, continual: bool
) -> dict[str, Start]:
    """Rules 1-3 for each domain: a start from the base, or a continual one still to fetch."""
    starts: dict[str, Start] = {}
    for domain in domains:
        ref = active.adapters.get(domain)
        if not continual:
            starts[domain] = _base(Why.OFF, "trainer.continual is off")
        elif ref is None:
            starts[domain] = _base(
                Why.NO_ACTIVE_ADAPTER, f"Active serves no {domain} adapter to grow from"
            )
        else:
            row = await registry_repository.get(session, ref.id)
            if row is None or row.tainted:
                why = row.tainted_reason if row is not None else "it is no longer registered"
                starts[domain] = _base(
                    Why.TAINTED,
                    f"Active's {domain} adapter {ref.name} is tainted ({why}); never grown "
                    "from, so this one starts from the base model",
                    adapter_id=ref.id,
                )
            else:
                starts[domain] = Start(
                    StartKind.CONTINUAL,
                    Why.GROWN,
                    f"grown from Active's {domain} adapter {ref.name}",
                    adapter_id=ref.id,
                    sha256=ref.sha256,
                )
    return starts


def fetched(
    starts: dict[str, Start], store: ArtifactStore, cache_dir: Path, trainer: AdapterTrainer
) -> dict[str, Start]:
    """Rules 4-5: a verified local copy of each continual start that this trainer can grow
    from; the others fall back to the base. Blocking: call it from a thread."""
    out: dict[str, Start] = {}
    for domain, start in starts.items():
        sha256 = start.sha256
        if start.kind is not StartKind.CONTINUAL or sha256 is None:
            out[domain] = start
            continue
        try:
            path = sync_adapter(store, sha256, cache_dir).path
        except (TwinloopError, OSError) as e:
            out[domain] = _base(
                Why.UNREADABLE,
                f"Active's {domain} adapter could not be read from the store ({e}); "
                "this one starts from the base model",
                adapter_id=start.adapter_id,
            )
            continue
        problem = trainer.cannot_grow_from(path)
        if problem is not None:
            out[domain] = _base(
                Why.INCOMPATIBLE,
                f"Active's {domain} adapter cannot be grown from: {problem}; this one starts "
                "from the base model",
                adapter_id=start.adapter_id,
            )
            continue
        out[domain] = replace(start, path=path)
    _prune(cache_dir, keep={s.sha256 for s in out.values() if s.adapter is not None})
    return out


def _prune(cache_dir: Path, keep: set[str | None]) -> None:
    """Drop the copies earlier cycles grew from: the trainer (one cycle at a time) is the
    cache's only reader, and each copy is as large as an adapter."""
    if not cache_dir.is_dir():
        return
    for path in cache_dir.iterdir():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
