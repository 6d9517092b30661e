"""States and kinds that the database stores as strings, each named once.

`CycleState` is a training cycle's state (the machine is drawn in
`twinloop/training/cycles.py`); `ItemStatus` is where a training example stands;
`ItemRole` is what an item was to one cycle; `RagVersionState` is where one domain's RAG
version stands (`twinloop/ingest/versions.py`); `MinedRule` and `MinedState` are what the
miner found in the answer log and where that proposal stands (`twinloop/mining`). They are
`StrEnum`s, so a member is its string everywhere: in SQL, JSON, metric labels and
comparisons with stored values.
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


class RagVersionState(StrEnum):
    """One domain's RAG version, from its reservation by an ingest on."""

    RESERVED = "reserved"
    """An ingest is writing its chunks (or died doing it: the lease ends that)."""
    FAILED = "failed"
    """The ingest failed; what it wrote to the index is still to be undone."""
    ABANDONED = "abandoned"
    """The ingest failed and the index holds nothing of it. Never used again."""
    COMMITTED = "committed"
    """Stored; no staging has shown it to Shadow yet."""
    STAGED = "staged"
    """Stored, and a snapshot pinning it (or later) was staged."""


# A version a snapshot may pin: its batch is stored and its chunks are all written.
USABLE_RAG_VERSIONS = (RagVersionState.COMMITTED, RagVersionState.STAGED)
# At most one of these per domain: the one batch writing into it, or the one to undo.
OPEN_RAG_VERSIONS = (RagVersionState.RESERVED, RagVersionState.FAILED)


# An answer's `finish_reason` when the client dropped its stream before the end: the partial
# answer is stored with it (twinloop.inference), and the miner reads it as a weak signal.
ABANDONED_FINISH_REASON = "abandoned"


class MinedRule(StrEnum):
    """The rule of the miner that found a weak signal (twinloop.mining.signals)."""

    RETRY = "retry"
    """The same user asked a similar question again soon after the answer."""
    REGENERATE = "regenerate"
    """The same user asked exactly the same question again at once (a regenerate)."""
    NEGATIVE_FOLLOWUP = "negative_followup"
    """The user's next message said the answer was wrong ("no, that's wrong")."""
    ABANDONED = "abandoned"
    """The client dropped the answer's stream before it ended."""


class MinedState(StrEnum):
    """Where a mined proposal stands (the machine: twinloop.mining's docstring)."""

    PROPOSED = "proposed"
    """One weak signal: shown for review, never trained on."""
    AGREED = "agreed"
    """Independent evidence agrees (two rules on one answer, or two users on one question):
    its training example is pending, and cleaning decides like for any other item."""
    ACCEPTED = "accepted"
    """An admin accepted it (with their own answer, if they gave one): as `agreed`."""
    REJECTED = "rejected"
    """An admin rejected it; what it taught, if anything, is deleted."""
    QUARANTINED = "quarantined"
    """The screen stopped it when it was mined (injection, empty, length, repetition)."""


# Proposals that still count as evidence for agreement.
LIVE_MINED_STATES = (MinedState.PROPOSED, MinedState.AGREED, MinedState.ACCEPTED)
