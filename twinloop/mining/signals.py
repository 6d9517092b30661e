"""The miner's rules: weak signals in one user's answers, read in the order they were served.

For each answer `a` of one user (or session) and the answers `b` served to them after it:

* **abandoned**: `a`'s stream was dropped by the client (`finish_reason` `abandoned`).
* **negative_followup**: the very next message `b` (within `window_s`) says `a` was wrong
  (`followups.negative_followup`); what it says instead is the candidate correction.
* **regenerate**: the first later question that is `a`'s again (equal up to case and
  punctuation) within `regenerate_window_s`.
* **retry**: else the first later question within `window_s` that is similar to `a`'s
  (`similarity`, at or above its threshold) and is no negative follow-up itself.

Each fires at most once per answer. A retry's or regenerate's chosen answer is `b`'s answer,
unless `b` drew a signal itself or says the same as `a` (then the pair keeps only its
rejected side); a negative
follow-up's chosen answer is the user's correction, if they wrote one. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby
from typing import Any

from twinloop.mining.followups import negative_followup
from twinloop.mining.similarity import QuestionSimilarity, same_question
from twinloop.settings import MiningSettings
from twinloop.states import ABANDONED_FINISH_REASON, MinedRule

LATER_ANSWER = "later_answer"
FOLLOWUP = "followup"
REVIEW = "review"


@dataclass(frozen=True)
class LoggedAnswer:
    """One stored answer as the miner reads it; `source` is who asked (user, else session)."""

    id: str
    source: str
    domain: str
    question: str
    answer: str
    created_at: datetime
    finish_reason: str | None = None


@dataclass(frozen=True)
class Signal:
    rule: MinedRule
    answer: LoggedAnswer
    """The answer the signal rejects."""
    later: LoggedAnswer | None = None
    similarity: float | None = None
    gap_s: float | None = None
    chosen: str | None = None
    chosen_from: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def find_signals(
    answers: Sequence[LoggedAnswer], similarity: QuestionSimilarity, settings: MiningSettings
) -> list[Signal]:
    """Every signal in `answers` (any order; grouped by source, read by time)."""
    ordered = sorted(answers, key=lambda a: (a.source, a.created_at, a.id))
    signals: list[Signal] = []
    for _, group in groupby(ordered, key=lambda a: a.source):
        signals.extend(_signals_of(list(group), similarity, settings))
    rejected = {s.answer.id for s in signals}
    return [_drop_contested_choice(s, rejected) for s in signals]


def _signals_of(
    answers: list[LoggedAnswer], similarity: QuestionSimilarity, settings: MiningSettings
) -> list[Signal]:
    followups = [
        negative_followup(
            a.question,
            max_words=settings.max_followup_words,
            min_correction_words=settings.min_correction_words,
        )
        for a in answers
    ]
    sims = similarity.matrix([a.question for a in answers])
    found = []
    for i, a in enumerate(answers):
        if a.finish_reason == ABANDONED_FINISH_REASON:
            found.append(Signal(MinedRule.ABANDONED, a, evidence={"partial_chars": len(a.answer)}))
        if i + 1 < len(answers):
            b, followup = answers[i + 1], followups[i + 1]
            gap = _gap(a, b)
            if followup is not None and gap <= settings.window_s:
                found.append(
                    Signal(
                        MinedRule.NEGATIVE_FOLLOWUP,
                        a,
                        later=b,
                        gap_s=gap,
                        chosen=followup.correction,
                        chosen_from=FOLLOWUP if followup.correction else None,
                        evidence={"phrase": followup.phrase, "followup": b.question},
                    )
                )
        for j in range(i + 1, len(answers)):
            b, gap = answers[j], _gap(a, answers[j])
            if gap > settings.window_s:
                break
            if followups[j] is not None:
                continue
            if same_question(a.question, b.question) and gap <= settings.regenerate_window_s:
                rule, score = MinedRule.REGENERATE, 1.0
            elif float(sims[i, j]) >= similarity.threshold:
                rule, score = MinedRule.RETRY, round(float(sims[i, j]), 4)
            else:
                continue
            found.append(
                Signal(
                    rule,
                    a,
                    later=b,
                    similarity=score,
                    gap_s=gap,
                    chosen=b.answer,
                    chosen_from=LATER_ANSWER,
                    evidence={"retry": b.question, "similarity_kind": similarity.kind},
                )
            )
            break
    return found


def _drop_contested_choice(signal: Signal, rejected: set[str]) -> Signal:
    """A chosen answer no better than the rejected one keeps only the rejected side: one that
    drew a signal itself, or the same text (a regenerate at temperature 0 gets it again)."""
    if signal.chosen_from != LATER_ANSWER or signal.later is None:
        return signal
    if signal.later.id in rejected:
        why = "the later answer drew a signal itself"
    elif same_question(signal.later.answer, signal.answer.answer):
        why = "the later answer is the same as the rejected one"
    else:
        return signal
    evidence = {**signal.evidence, "chosen_dropped": why}
    return replace(signal, chosen=None, chosen_from=None, evidence=evidence)


def _gap(a: LoggedAnswer, b: LoggedAnswer) -> float:
    return round((b.created_at - a.created_at).total_seconds(), 3)
