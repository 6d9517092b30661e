"""What a QA run answers against: the snapshot each slot served when the run started.

The run reads the release once and computes every domain's target (adapter, RAG version)
from that one snapshot per slot; every case is answered against those targets, whatever
the slot serves meanwhile, and the report names the pinned snapshot. A snapshot staged
during the run that keeps the pinned adapters (an ingest's child: newer RAG versions) does
not touch them on the engine, so the run stands; its gate verdict is found for that child
too (`QaService.snapshot_verdict`). A change that removes or replaces a pinned adapter may
have unloaded it mid-run, so that run fails, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twinloop.qa.errors import QaError
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import ReleaseState, SlotSnapshot, Target
from twinloop.settings import Slot


@dataclass(frozen=True)
class Pin:
    """One slot's snapshot as a run started, and the targets every case is asked at."""

    slot: Slot
    serving: SlotSnapshot
    targets: dict[str, Target]

    @property
    def snapshot_id(self) -> str:
        return self.serving.snapshot_id


def pin(
    releases: ReleaseController, state: ReleaseState, slot: Slot, domains: Sequence[str]
) -> Pin:
    """`slot`'s targets for every domain, all from its snapshot in `state`."""
    return Pin(
        slot=slot,
        serving=state.serving(slot),
        targets={d: releases.target(d, slot=slot, state=state) for d in domains},
    )


def keeps_adapters(pinned: SlotSnapshot, now: SlotSnapshot) -> bool:
    """Whether `now` serves every adapter `pinned` serves, in the same domain: staging it
    unloaded none of them."""
    return pinned.adapter_ids.items() <= now.adapter_ids.items()


async def moved(releases: ReleaseController, pinned: Pin) -> QaError | None:
    """Why the run's answers no longer stand for the pinned snapshot, or None."""
    await releases.refresh()
    now = releases.state.serving(pinned.slot)
    if keeps_adapters(pinned.serving, now):
        return None
    return QaError(
        f"the {pinned.slot.value} slot moved during the QA run from snapshot "
        f"{pinned.snapshot_id} ({_adapters(pinned.serving)}) to {now.snapshot_id} "
        f"({_adapters(now)}): the pinned adapters may have been unloaded from its engine "
        "mid-run, so the answers are not one snapshot's. Run QA again."
    )


async def check(releases: ReleaseController, pinned: Pin) -> None:
    """Raise `QaError` when the pinned adapters left the slot during the run."""
    error = await moved(releases, pinned)
    if error is not None:
        raise error


def _adapters(serving: SlotSnapshot) -> str:
    named = ", ".join(f"{d}={a.name}" for d, a in sorted(serving.adapters.items()))
    return f"adapters {named}" if named else "no adapters"
