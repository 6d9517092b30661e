"""The in-memory picture of the release in force, swapped as one immutable object."""

from __future__ import annotations

from dataclasses import dataclass, field

from twinloop.settings import Slot


@dataclass(frozen=True)
class SlotSnapshot:
    """What one slot serves: a snapshot, reduced to what routing a request needs."""

    snapshot_id: str
    base_model: str
    # domain -> engine model name of the domain's adapter; a missing domain uses the base model.
    adapters: dict[str, str] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Target:
    """Where one request goes: the slot, its snapshot, and the engine model name to ask for."""

    slot: Slot
    snapshot_id: str
    model: str
    adapter: str | None
