"""The in-memory picture of the release in force, swapped as one immutable object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from twinloop.settings import Slot

LATEST: Final = "latest"
# What a swap or rollback expects to change: a generation, or "latest" — the one in force
# when the request arrived. Either way the change is refused if the release moved past it.
ExpectedGeneration = int | Literal["latest"]


@dataclass(frozen=True)
class AdapterRef:
    """An adapter version as an engine needs it: the name it is served under and its files."""

    id: str
    name: str
    path: str
    """Where the store kept it when it was registered; engines get it by `sha256`."""
    sha256: str


@dataclass(frozen=True)
class SlotSnapshot:
    """What one slot serves: a snapshot, reduced to what routing a request needs."""

    snapshot_id: str
    base_model: str
    # domain -> adapter; a domain that is missing is served by the base model.
    adapters: dict[str, AdapterRef] = field(default_factory=dict)
    # domain -> pinned RAG version; 0 (or missing) means no documents are visible.
    rag_versions: dict[str, int] = field(default_factory=dict)
    router_rules_version: int | None = None

    @property
    def adapter_names(self) -> set[str]:
        return {a.name for a in self.adapters.values()}

    @property
    def adapter_ids(self) -> dict[str, str]:
        """domain -> adapter version id: what "serves the same adapters" compares."""
        return {domain: a.id for domain, a in self.adapters.items()}


@dataclass(frozen=True)
class ReleaseState:
    generation: int
    active_slot: Slot
    slots: dict[Slot, SlotSnapshot]

    @property
    def shadow_slot(self) -> Slot:
        return self.active_slot.other

    def serving(self, slot: Slot) -> SlotSnapshot:
        return self.slots[slot]

    def slot_holding(self, snapshot_id: str) -> Slot | None:
        for slot in (self.shadow_slot, self.active_slot):
            if self.slots[slot].snapshot_id == snapshot_id:
                return slot
        return None


@dataclass(frozen=True)
class Target:
    """Where one request goes: the slot, its snapshot, and the engine model name to ask for."""

    slot: Slot
    snapshot_id: str
    model: str
    adapter: str | None
    rag_version: int = 0
