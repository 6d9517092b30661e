"""Step 8 of the learning loop: a failed QA round becomes targeted training examples.

Only training-split cases ever become corrections, so the held-out cases the gate reads
stay untrained. Each failed one becomes:

* an explicit **correction** — the question with the reference answer — when Shadow got a
  fact wrong or hallucinated, and Active did not know it either;
* paraphrased **reinforcement** — the question in a few phrasings, each with the reference —
  when Active answered it right and Shadow no longer does: something was forgotten, and one
  phrasing alone would teach the words rather than the fact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twinloop.db.models import QaItem
from twinloop.qa.suites import TRAIN

CORRECTION, REINFORCEMENT = "qa-correction", "qa-reinforcement"
_PHRASINGS = (
    "{q}",
    "Quick question: {q}",
    "{q} Please answer briefly.",
    "Could you tell me this? {q}",
    "I need to know: {q}",
)


@dataclass(frozen=True)
class Correction:
    case_key: str
    kind: str
    domain: str
    question: str
    answer: str


def corrections_from(
    items: Sequence[QaItem], baseline_labels: Mapping[str, str], *, phrasings: int
) -> list[Correction]:
    out: list[Correction] = []
    for item in items:
        if item.split != TRAIN or item.label == "correct":
            continue
        forgotten = baseline_labels.get(item.item_key) == "correct"
        kind = REINFORCEMENT if forgotten else CORRECTION
        templates = _PHRASINGS[: max(1, phrasings)] if forgotten else _PHRASINGS[:1]
        for template in templates:
            out.append(
                Correction(
                    case_key=item.item_key,
                    kind=kind,
                    domain=item.domain,
                    question=template.format(q=item.question),
                    answer=item.expected,
                )
            )
    return out
