"""Paired comparison of mirrored answers: Active and the canary asked the same question.

A split canary compares two populations of users; a *pair* compares two answers to one
question, so the question's difficulty cancels and fewer observations decide. Each pair
gets one outcome for the canary — win, tie or loss — from the first of these that decides:

1. **A later correction** of Active's answer (the user said what it should have been): an
   answer *agrees* with it when the normalised correction occurs in the normalised answer,
   or at least `AGREE_RECALL` of the correction's words (3 letters or more) do. One side
   agreeing and the other not decides; both or neither agreeing is a tie.
2. **Cheap signals**, always computed: an answer is *failed* when it errored, is empty or
   refuses in its first sentence. The canary failing where Active did not is a loss, the
   reverse a win; the same answer (equal once normalised) is a tie. Truncation
   (finish_reason "length"), latencies and the divergence of the two texts (token Jaccard
   and difflib ratio) are reported, never decisive on their own: a different answer is not
   a worse one.
3. **A pairwise LLM judge** (optional), asked in both orders to cancel position bias:
   both orders naming the same answer decide; disagreement (or a tie) is a tie.

Otherwise the pair is *undecided*: two different answers and nobody who can say which is
better. Undecided pairs count in no test.

**Drift** is measured apart: on questions of the domains that training should leave alone
(`canary.drift_domains`, "general" by default), a canary whose answer shares less than
`canary.drift_similarity` of Active's words (difflib ratio) has *drifted*. Drift is one-sided
evidence (a changed answer can be better, but a Shadow that changes many general answers
has forgotten something), so it is a rate tested against a bound, never a loss in the tally.

The pairs are summed up by the **sign test**: among the decided pairs (wins and losses),
losses against 1/2, one-sided "canary worse" (exact binomial test, `scipy.stats.binomtest`),
reported with its p-value. It is a fixed-sample test; the decision uses it only to *hold
back* a promotion (more looks can only hold back more). The always-valid tests on pairs
(the mean of win = +1, tie = 0, loss = -1, and the drift rate) are in `statistics`.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Protocol

AGREE_RECALL = 0.8
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?\n]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _normalise(text: str) -> str:
    return " ".join(_words(text))


# Openings of a refusal, normalised as answers are ("can't" is "can t").
_REFUSALS = tuple(_normalise(p) for p in (
    "I can't help", "I cannot help", "I can't assist", "I cannot assist", "I can't answer",
    "I cannot answer", "I'm unable to", "I am unable to",
))  # fmt: skip

JudgeChoice = Literal["a", "b", "tie"]


class Outcome(StrEnum):
    """One pair's result, for the canary."""

    WIN = "win"
    TIE = "tie"
    LOSS = "loss"
    UNDECIDED = "undecided"  # different answers, and nothing says which is better


@dataclass(frozen=True)
class Reply:
    """One arm's answer to a mirrored question."""

    text: str
    latency_ms: float
    finish_reason: str | None = None
    error: str | None = None  # the error's message when the engine failed

    @property
    def refused(self) -> bool:
        """Its first sentence refuses ("I'm sorry, but I can't help with that.")."""
        opening = _normalise(_SENTENCE_END.split(self.text, maxsplit=1)[0])
        return any(phrase in opening for phrase in _REFUSALS)

    @property
    def failed(self) -> bool:
        return self.error is not None or not self.text.strip() or self.refused

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def signals(self) -> dict[str, Any]:
        return {
            "error": self.error is not None,
            "empty": not self.text.strip(),
            "refused": self.refused,
            "truncated": self.truncated,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class Signals:
    """What the cheap signals say about a pair; `outcome` None: they do not decide."""

    outcome: Outcome | None
    active: dict[str, Any]
    canary: dict[str, Any]
    jaccard: float  # of the two answers' word sets
    similarity: float  # difflib's ratio of the two word sequences
    both_answered: bool  # neither failed: only then do the texts compare

    def summary(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "active": self.active,
            "canary": self.canary,
            "jaccard": self.jaccard,
            "similarity": self.similarity,
        }


def signals(active: Reply, canary: Reply) -> Signals:
    outcome = None
    a, c = _words(active.text), _words(canary.text)
    both_answered = not (active.failed or canary.failed)
    if canary.failed and not active.failed:
        outcome = Outcome.LOSS
    elif active.failed and not canary.failed:
        outcome = Outcome.WIN
    elif both_answered and a == c:
        outcome = Outcome.TIE  # the same answer: the same quality, whoever judges
    union = set(a) | set(c)
    jaccard = len(set(a) & set(c)) / len(union) if union else 1.0
    similarity = difflib.SequenceMatcher(None, a, c, autojunk=False).ratio()
    return Signals(outcome, active.signals(), canary.signals(), jaccard, similarity, both_answered)


class PairwiseJudge(Protocol):
    """Which of two answers to a question is better: "a", "b" or "tie"."""

    async def compare(self, question: str, answer_a: str, answer_b: str) -> JudgeChoice: ...


@dataclass(frozen=True)
class Judged:
    """The LLM judge's verdicts in both orders (Active first, then the canary first)."""

    active_first: JudgeChoice
    canary_first: JudgeChoice

    @property
    def outcome(self) -> Outcome:
        # Map both verdicts to the arm they name; only agreement decides, else a tie.
        first = {"a": Outcome.LOSS, "b": Outcome.WIN}.get(self.active_first)
        second = {"a": Outcome.WIN, "b": Outcome.LOSS}.get(self.canary_first)
        return first if first is not None and first == second else Outcome.TIE


async def judge_both_orders(
    judge: PairwiseJudge, question: str, active: str, canary: str
) -> Judged:
    first, second = await asyncio.gather(
        judge.compare(question, active, canary), judge.compare(question, canary, active)
    )
    return Judged(active_first=first, canary_first=second)


@dataclass(frozen=True)
class AgainstCorrection:
    """Both answers scored against a later correction of Active's answer."""

    active_recall: float
    canary_recall: float

    @property
    def outcome(self) -> Outcome:
        active, canary = self.active_recall >= AGREE_RECALL, self.canary_recall >= AGREE_RECALL
        if active == canary:
            return Outcome.TIE
        return Outcome.WIN if canary else Outcome.LOSS


def against_correction(active: str, canary: str, correction: str) -> AgainstCorrection:
    return AgainstCorrection(_agreement(active, correction), _agreement(canary, correction))


def _agreement(answer: str, correction: str) -> float:
    """1.0 when the correction occurs in the answer; else the share of its words there."""
    wanted = _normalise(correction)
    if wanted and wanted in _normalise(answer):
        return 1.0
    words = {w for w in _words(correction) if len(w) >= 3}
    if not words:
        return 0.0
    return len(words & set(_words(answer))) / len(words)


def outcome_of(
    signal: Signals, *, judged: Judged | None = None, correction: AgainstCorrection | None = None
) -> Outcome:
    """The first that decides: the correction, the cheap signals, the LLM judge; else undecided."""
    if correction is not None:
        return correction.outcome
    if signal.outcome is not None:
        return signal.outcome
    return judged.outcome if judged is not None else Outcome.UNDECIDED


@dataclass(frozen=True)
class Pair:
    """A mirrored pair as stored, with what judged it since: the judge, a correction."""

    domain: str
    active: Reply
    canary: Reply
    judged: Judged | None = None
    correction: str | None = None  # a user's correction of Active's answer, if one came

    @cached_property
    def signals(self) -> Signals:
        return signals(self.active, self.canary)

    @property
    def outcome(self) -> Outcome:
        scored = None
        if self.correction:
            scored = against_correction(self.active.text, self.canary.text, self.correction)
        return outcome_of(self.signals, judged=self.judged, correction=scored)

    def drifted(self, min_similarity: float) -> bool | None:
        """Whether the canary's answer left Active's; None when either failed to answer."""
        if not self.signals.both_answered:
            return None
        return self.signals.similarity < min_similarity


@dataclass(frozen=True)
class PairTally:
    """Pairs by outcome, and the drift count on the domains training should leave alone."""

    wins: int = 0
    ties: int = 0
    losses: int = 0
    undecided: int = 0
    drift_pairs: int = 0  # pairs of drift domains where both arms answered
    drifted: int = 0  # of those, the canary's answer left Active's

    @property
    def pairs(self) -> int:
        return self.wins + self.ties + self.losses + self.undecided

    @property
    def informative(self) -> int:
        """Pairs with an outcome: wins, ties and losses."""
        return self.wins + self.ties + self.losses

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> PairTally:
        listed = list(outcomes)
        return cls(*(listed.count(o) for o in Outcome))

    def summary(self) -> dict[str, Any]:
        return {
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "undecided": self.undecided,
            "drift_pairs": self.drift_pairs,
            "drifted": self.drifted,
        }


def tally(
    pairs: Iterable[Pair], *, drift_domains: Collection[str], drift_similarity: float
) -> PairTally:
    """Each pair's outcome counted, and drift on `drift_domains`."""
    outcomes: Counter[Outcome] = Counter()
    drift_pairs = drifted = 0
    for pair in pairs:
        outcomes[pair.outcome] += 1
        if pair.domain in drift_domains:
            moved = pair.drifted(drift_similarity)
            drift_pairs += moved is not None
            drifted += bool(moved)
    return PairTally(
        wins=outcomes[Outcome.WIN],
        ties=outcomes[Outcome.TIE],
        losses=outcomes[Outcome.LOSS],
        undecided=outcomes[Outcome.UNDECIDED],
        drift_pairs=drift_pairs,
        drifted=drifted,
    )


@dataclass(frozen=True)
class SignTest:
    """Exact one-sided sign test that the canary loses more pairs than it wins."""

    tally: PairTally
    p_value: float
    alpha: float

    @property
    def worse(self) -> bool:
        return self.p_value < self.alpha

    def summary(self) -> dict[str, Any]:
        return {
            "wins": self.tally.wins,
            "ties": self.tally.ties,
            "losses": self.tally.losses,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "worse": self.worse,
        }


def sign_test(tally: PairTally, *, alpha: float) -> SignTest:
    from scipy.stats import binomtest

    decided = tally.wins + tally.losses
    if decided == 0:
        return SignTest(tally, 1.0, alpha)
    p_value = float(binomtest(tally.losses, decided, 0.5, alternative="greater").pvalue)
    return SignTest(tally, p_value, alpha)
