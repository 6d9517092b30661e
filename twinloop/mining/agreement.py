"""When a weak proposal becomes trainable: independent evidence agrees with it.

A `proposed` proposal with a chosen answer is agreed when either

* **signals**: another rule fired on the same rejected answer (a "no, that's wrong" and a
  retry, an abandoned stream and a regenerate): two independent signals; or
* **users**: proposals of at least `users` distinct users (or sessions) on similar questions
  of the same domain (similarity at or above its threshold) are live: several people were
  unhappy with the answer to the same question.

Evidence counts while it is live (`proposed`, `agreed`, `accepted`): a rejected or
quarantined proposal backs nothing. A proposal whose chosen answer is itself rejected by a
live signal (the retry's answer was retried again) is contested and never agreed. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from twinloop.mining.signals import LATER_ANSWER
from twinloop.states import MinedState

SIGNALS = "signals"
USERS = "users"


@dataclass(frozen=True)
class Proposal:
    id: str
    rule: str
    state: str
    answer_id: str
    later_answer_id: str | None
    source: str
    domain: str
    question: str
    chosen_from: str | None


def agreements(
    proposals: Sequence[Proposal], sims: NDArray[np.float64], *, threshold: float, users: int
) -> dict[str, dict[str, Any]]:
    """For each proposal that becomes trainable: the agreement, as evidence to keep.

    `proposals` are the live ones; `sims` their questions' pairwise similarity.
    """
    rejected = {p.answer_id for p in proposals}
    by_answer: defaultdict[str, list[Proposal]] = defaultdict(list)
    for p in proposals:
        by_answer[p.answer_id].append(p)
    found: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(proposals):
        if p.state != MinedState.PROPOSED or p.chosen_from is None:
            continue
        if p.chosen_from == LATER_ANSWER and p.later_answer_id in rejected:
            continue  # contested: what it would teach drew a signal itself
        others = [q for q in by_answer[p.answer_id] if q.rule != p.rule]
        if others:
            found[p.id] = {
                "kind": SIGNALS,
                "rules": sorted({p.rule, *(q.rule for q in others)}),
                "with": sorted(q.id for q in others),
            }
            continue
        similar = [
            (q, float(sims[i, j]))
            for j, q in enumerate(proposals)
            if q.source != p.source and q.domain == p.domain and sims[i, j] >= threshold
        ]
        sources = {p.source, *(q.source for q, _ in similar)}
        if len(sources) >= users:
            found[p.id] = {
                "kind": USERS,
                "users": len(sources),
                "with": sorted(q.id for q, _ in similar),
                "min_similarity": round(min(score for _, score in similar), 4),
            }
    return found
