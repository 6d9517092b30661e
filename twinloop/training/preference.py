"""Which preference pairs a cycle trains on with DPO, and which it keeps out to measure it.

A pair is a new item of the cycle whose example carries a rejected answer: a correction of
a thumbs-down (the correction over the answer it corrected) or an accepted mined proposal
(its chosen answer over the one the user retried or disowned). Both reached the cycle
through cleaning like any item; the chosen side is the item's text as cleaned.

Held-out pairs are chosen by a hash of the example id, so a resumed or re-run cycle holds
out the same pairs, and an item's fate does not depend on the order rows come back in.
They are kept out of the DPO stage only: a correction is never withheld from SFT for the
sake of a measurement, which is why the report gives the held-out accuracy of the SFT'd
adapter beside the DPO'd one — the difference is what DPO added.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.preference import PreferencePair


@dataclass(frozen=True)
class PairItem:
    """A cycle's new item with a rejected answer, as the repository reads it."""

    example_id: str
    domain: str
    question: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class DomainPairs:
    trained: list[PreferencePair]
    heldout: list[PreferencePair]


def split_pairs(items: Sequence[PairItem], heldout_fraction: float) -> dict[str, DomainPairs]:
    """Each domain's pairs, `floor(n * heldout_fraction)` of them held out (none when that
    is under one pair); a pair whose answers are the same text teaches nothing and is
    dropped."""
    by_domain: dict[str, list[PairItem]] = defaultdict(list)
    for item in items:
        if item.chosen.strip() != item.rejected.strip():
            by_domain[item.domain].append(item)
    out = {}
    for domain, found in sorted(by_domain.items()):
        ordered = sorted(found, key=lambda i: hashlib.sha256(i.example_id.encode()).hexdigest())
        held = math.floor(len(ordered) * heldout_fraction)
        pairs = [PreferencePair(i.question, i.chosen, i.rejected) for i in ordered]
        out[domain] = DomainPairs(trained=pairs[held:], heldout=pairs[:held])
    return out
