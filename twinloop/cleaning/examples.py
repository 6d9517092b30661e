"""What cleaning takes (candidate examples) and gives (accepted, quarantined, counts)."""

from __future__ import annotations

from dataclasses import dataclass

# Rule names, as they appear in `Quarantined.rule` and in `counts` ("quarantine.<rule>").
EMPTY = "empty"
INJECTION = "injection"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
REPETITION = "repetition"
DUPLICATE = "duplicate"
MINED_CAP = "mined_cap"
SOURCE_CAP = "source_cap"
CATEGORY_CAP = "category_cap"
RULES = (
    EMPTY,
    INJECTION,
    TOO_SHORT,
    TOO_LONG,
    REPETITION,
    DUPLICATE,
    MINED_CAP,
    SOURCE_CAP,
    CATEGORY_CAP,
)
# The rules `pipeline.screen` applies, one item at a time: what they stop must not be taught or
# served. The others compare items with each other and say nothing against the item itself.
SCREEN_RULES = (EMPTY, INJECTION, TOO_SHORT, TOO_LONG, REPETITION)


@dataclass(frozen=True)
class CandidateExample:
    """One question/answer pair offered for training."""

    id: str
    domain: str
    question: str
    answer: str
    source: str  # "example", "correction", or the client / user id that sent it
    category: str  # the domain, a feedback kind, a topic: whatever the caller balances on
    # Other texts the example carries (held-out paraphrases, then accept strings): redacted and
    # screened for injection like the question; no length, repetition or duplicate rule.
    extra: tuple[str, ...] = ()
    # Mined from the answer log (twinloop.mining): a weak label, capped as a group (`MINED_CAP`).
    mined: bool = False


@dataclass(frozen=True)
class Quarantined:
    """An example kept out of training, with the rule that stopped it and why."""

    example: CandidateExample
    rule: str
    reason: str


@dataclass
class CleaningResult:
    accepted: list[CandidateExample]
    quarantined: list[Quarantined]
    counts: dict[str, int]
