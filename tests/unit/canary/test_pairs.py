"""Mirrored pairs: cheap signals, the judge in both orders, corrections, the sign test."""

from __future__ import annotations

import pytest

from twinloop.canary.pairs import (
    AgainstCorrection,
    JudgeChoice,
    Judged,
    Outcome,
    Pair,
    PairTally,
    Reply,
    against_correction,
    judge_both_orders,
    outcome_of,
    sign_test,
    signals,
    tally,
)

GOOD = Reply("Paris is the capital of France.", latency_ms=120.0, finish_reason="stop")


@pytest.mark.parametrize(
    "bad",
    [
        Reply("", latency_ms=50.0),
        Reply("   ", latency_ms=50.0),
        Reply("I can\u2019t help with that request.", latency_ms=50.0),  # a curly apostrophe
        Reply("", latency_ms=5000.0, error="engine timed out"),
    ],
)
def test_a_failed_canary_answer_loses_and_a_failed_active_one_wins(bad: Reply) -> None:
    assert signals(GOOD, bad).outcome is Outcome.LOSS
    assert signals(bad, GOOD).outcome is Outcome.WIN
    assert signals(bad, bad).outcome is None


def test_truncation_latency_and_divergence_are_reported_not_decisive() -> None:
    canary = Reply("Paris is the capital of", latency_ms=900.0, finish_reason="length")

    signal = signals(GOOD, canary)

    assert signal.outcome is None
    assert signal.canary == {"error": False, "empty": False, "refused": False,
                             "truncated": True, "latency_ms": 900.0}  # fmt: skip
    assert signal.active["truncated"] is False and signal.active["latency_ms"] == 120.0
    assert signal.jaccard == pytest.approx(5 / 6)
    assert signal.similarity == pytest.approx(2 * 5 / 11)
    assert signals(GOOD, GOOD).jaccard == signals(GOOD, GOOD).similarity == 1.0


def test_a_refusal_is_read_in_the_first_sentence_only() -> None:
    answer = Reply("Paris. Elsewhere in the text: I cannot help but add more.", latency_ms=1.0)
    assert not answer.refused
    assert Reply("I'm sorry, but I cannot help with that. Ask a doctor.", latency_ms=1.0).refused


class _Judge:
    """Prefers the answer containing `better`; without one, always names its first answer."""

    def __init__(self, better: str | None) -> None:
        self.better = better
        self.calls: list[tuple[str, str, str]] = []

    async def compare(self, question: str, answer_a: str, answer_b: str) -> JudgeChoice:
        self.calls.append((question, answer_a, answer_b))
        if self.better is None:
            return "a"
        return "a" if self.better in answer_a else "b" if self.better in answer_b else "tie"


async def test_the_judge_is_asked_in_both_orders() -> None:
    judge = _Judge(better="canary")

    judged = await judge_both_orders(judge, "q?", "active says", "canary says")

    assert judge.calls == [("q?", "active says", "canary says"),
                           ("q?", "canary says", "active says")]  # fmt: skip
    assert judged == Judged(active_first="b", canary_first="a")
    assert judged.outcome is Outcome.WIN
    worse = await judge_both_orders(_Judge(better="active"), "q?", "active says", "canary says")
    assert worse.outcome is Outcome.LOSS


async def test_a_judge_that_always_picks_the_first_answer_gives_ties() -> None:
    judged = await judge_both_orders(_Judge(better=None), "q?", "one", "two")

    assert judged == Judged(active_first="a", canary_first="a")
    assert judged.outcome is Outcome.TIE
    assert Judged(active_first="tie", canary_first="a").outcome is Outcome.TIE


def test_answers_are_scored_against_a_later_correction() -> None:
    correction = "The capital of Australia is Canberra."

    right = against_correction("Sydney.", "It is Canberra, the capital of Australia.", correction)
    both = against_correction("the capital of australia is canberra", "Canberra is the "
                              "capital of Australia", correction)  # fmt: skip

    assert right == AgainstCorrection(active_recall=0.0, canary_recall=1.0)
    assert right.outcome is Outcome.WIN
    assert both.active_recall == 1.0 and both.outcome is Outcome.TIE
    # One of the correction's four words is too little to agree with it.
    assert against_correction("Sydney", "Canberra", correction).canary_recall == 0.25
    assert against_correction("Sydney", "Canberra", correction).outcome is Outcome.TIE
    assert against_correction("x", "y", "a").canary_recall == 0.0


def test_the_correction_decides_first_then_signals_then_the_judge() -> None:
    loss_by_signal = signals(GOOD, Reply("", latency_ms=1.0))
    same_answer = signals(GOOD, Reply("paris is the capital of france", latency_ms=3.0))
    different = signals(GOOD, Reply("Lyon, a city in France.", latency_ms=3.0))
    judge_win = Judged(active_first="b", canary_first="a")
    correction_win = AgainstCorrection(active_recall=0.0, canary_recall=1.0)

    assert outcome_of(loss_by_signal, judged=judge_win, correction=correction_win) is Outcome.WIN
    assert outcome_of(loss_by_signal, judged=judge_win) is Outcome.LOSS
    assert outcome_of(same_answer, judged=judge_win) is Outcome.TIE
    assert outcome_of(different, judged=judge_win) is Outcome.WIN
    assert outcome_of(different) is Outcome.UNDECIDED


def test_a_stored_pair_is_scored_against_its_correction_and_tallied_with_drift() -> None:
    garbled = Reply("bananas bananas tree", latency_ms=2.0)
    pairs = [
        Pair("general", GOOD, GOOD),  # the same answer: a tie, no drift
        Pair("general", GOOD, garbled),  # undecided, drifted
        Pair("general", GOOD, Reply("", latency_ms=1.0)),  # a loss; no text to drift
        Pair("law", GOOD, garbled),  # undecided; law is not a drift domain
        Pair(
            "law",
            Reply("Sydney.", latency_ms=1.0),
            Reply("Canberra.", latency_ms=1.0),
            correction="Canberra",
        ),
    ]

    counted = tally(pairs, drift_domains=["general"], drift_similarity=0.5)

    assert pairs[4].outcome is Outcome.WIN and pairs[1].drifted(0.5) is True
    assert counted == PairTally(wins=1, ties=1, losses=1, undecided=2, drift_pairs=2, drifted=1)
    assert counted.pairs == 5 and counted.informative == 3


def test_the_sign_test_is_one_sided_canary_worse() -> None:
    tally = PairTally.of([Outcome.WIN] * 2 + [Outcome.LOSS] * 8 + [Outcome.TIE] * 30)

    assert tally == PairTally(wins=2, ties=30, losses=8) and tally.pairs == 40
    close = sign_test(tally, alpha=0.05)
    assert close.p_value == pytest.approx(56 / 1024) and not close.worse
    worse = sign_test(PairTally(wins=1, ties=0, losses=9), alpha=0.05)
    assert worse.p_value == pytest.approx(11 / 1024) and worse.worse
    assert sign_test(PairTally(wins=9, losses=1), alpha=0.05).p_value > 0.99
    assert sign_test(PairTally(ties=5), alpha=0.05).p_value == 1.0
