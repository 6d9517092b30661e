"""The states a training cycle moves through, the roles of its items, the statuses of examples.

A cycle moves

    queued → collecting → cleaning → training → registered → qa → awaiting_canary
                                        ↑                    │
                                        └── corrections ─────┘ (a failed round, rounds left)

and ends `awaiting_canary` (the QA gate passed; the canary takes it from there), `rejected`
(the gate failed in the last round, or a round gained nothing), `skipped` (nothing new to
learn), `abandoned` (interrupted too often, or an item it learned from was deleted
mid-cycle) or `failed` (an error, recorded). A runner without QA ends at `staged`. Each
transition is committed with the work of the step before it, so a trainer killed anywhere
finds the cycle in a state it can resume from (see `twinloop.training.runner`).
"""

from __future__ import annotations

QUEUED = "queued"
COLLECTING = "collecting"
CLEANING = "cleaning"
TRAINING = "training"
REGISTERED = "registered"
STAGED = "staged"
QA = "qa"
AWAITING_CANARY = "awaiting_canary"
REJECTED = "rejected"
SKIPPED = "skipped"
ABANDONED = "abandoned"
FAILED = "failed"
IN_PROGRESS = (COLLECTING, CLEANING, TRAINING, REGISTERED, QA)
UNFINISHED = (QUEUED, *IN_PROGRESS)
FINISHED = (STAGED, AWAITING_CANARY, REJECTED, SKIPPED, ABANDONED, FAILED)

# What an item of a cycle was to it: learned anew, replayed, or kept out by cleaning.
NEW, REPLAY, QUARANTINED = "new", "replay", "quarantined"

# Where a training example stands (`quarantined` too): waiting for a cycle, taken by one,
# or (made by QA for one cycle) no longer used.
PENDING, ACCEPTED, RETIRED = "pending", "accepted", "retired"
# The source of the examples QA made from a failed round (qa-correction, qa-reinforcement).
QA_MADE_PREFIX = "qa-"
