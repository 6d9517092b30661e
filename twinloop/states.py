"""States and kinds that the database stores as strings, each named once.

`CycleState` is a training cycle's state (the machine is drawn in
`twinloop/training/cycles.py`); `ItemStatus` is where a training example stands;
`ItemRole` is what an item was to one cycle. They are `StrEnum`s, so a member is its
string everywhere: in SQL, JSON, metric labels and comparisons with stored values.
"""

from __future__ import annotations

from enum import StrEnum


class CycleState(StrEnum):
    QUEUED = "queued"
    COLLECTING = "collecting"
    CLEANING = "cleaning"
    TRAINING = "training"
    REGISTERED = "registered"
    QA = "qa"
    STAGED = "staged"
    AWAITING_CANARY = "awaiting_canary"
    # The gateway's canary takes the cycle from awaiting_canary on (twinloop.canary).
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    INCONCLUSIVE = "inconclusive"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"
    FAILED = "failed"


# A trainer is working on these (or died working on them).
IN_PROGRESS = (
    CycleState.COLLECTING,
    CycleState.CLEANING,
    CycleState.TRAINING,
    CycleState.REGISTERED,
    CycleState.QA,
)
UNFINISHED = (CycleState.QUEUED, *IN_PROGRESS)
# Finished for the trainer: what follows awaiting_canary is the gateway's canary.
FINISHED = (
    CycleState.STAGED,
    CycleState.AWAITING_CANARY,
    CycleState.CANARY,
    CycleState.PROMOTED,
    CycleState.ROLLED_BACK,
    CycleState.INCONCLUSIVE,
    CycleState.REJECTED,
    CycleState.SKIPPED,
    CycleState.ABANDONED,
    CycleState.FAILED,
)


class ItemStatus(StrEnum):
    """A training example's status."""

    PENDING = "pending"
    """Waiting for the next cycle to clean it."""
    ACCEPTED = "accepted"
    """Cleaning kept it; a cycle trains (or trained) on it."""
    QUARANTINED = "quarantined"
    """Cleaning refused it, or `trainer.max_rejections` cycles that learned it were refused
    (rejected by the QA gate or rolled back by their canary)."""
    RETIRED = "retired"
    """A QA-made example of a rejected or rolled-back cycle; the next cycle's QA makes its
    own."""


class ItemRole(StrEnum):
    """What an item was to one training cycle."""

    NEW = "new"
    REPLAY = "replay"
    QUARANTINED = "quarantined"
