"""The miner's rules on an answer log in memory: what is a signal and what is not."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from twinloop.mining.followups import negative_followup
from twinloop.mining.signals import LoggedAnswer, Signal, find_signals
from twinloop.mining.similarity import EmbeddingSimilarity, LexicalSimilarity
from twinloop.settings import MiningSettings
from twinloop.states import ABANDONED_FINISH_REASON, MinedRule
from twinloop.testing.answer_log import T0, WordEmbedder

SETTINGS = MiningSettings()  # window 600 s, regenerate 120 s
LEXICAL = LexicalSimilarity(threshold=SETTINGS.lexical_threshold)


def answer(
    n: int,
    seconds: float,
    question: str,
    *,
    source: str = "key1:u1",
    finish: str | None = "stop",
) -> LoggedAnswer:
    return LoggedAnswer(
        id=f"a{n}",
        source=source,
        domain="law",
        question=question,
        answer=f"answer {n}",
        created_at=T0 + timedelta(seconds=seconds),
        finish_reason=finish,
    )


def found(*answers: LoggedAnswer, similarity: object = LEXICAL) -> list[tuple[str, str, str]]:
    signals = find_signals(answers, similarity, SETTINGS)  # type: ignore[arg-type]
    return [(s.rule, s.answer.id, s.later.id if s.later else "-") for s in signals]


def only(*answers: LoggedAnswer) -> Signal:
    (signal,) = find_signals(answers, LEXICAL, SETTINGS)
    return signal


def test_a_retry_in_other_words_by_the_same_user_within_the_window_is_found() -> None:
    first = answer(1, 0, "What notice period applies to a tenancy in Zelland?")
    retry = answer(2, 90, "Zelland tenancy: which notice period applies?")

    signal = only(first, retry)

    assert (signal.rule, signal.answer.id, signal.later and signal.later.id) == (
        "retry",
        "a1",
        "a2",
    )
    # Its evidence: the similarity, the gap, and the retry's answer as the chosen one.
    assert signal.similarity is not None and signal.similarity >= SETTINGS.lexical_threshold
    assert signal.gap_s == 90.0
    assert (signal.chosen, signal.chosen_from) == ("answer 2", "later_answer")
    assert signal.evidence["similarity_kind"] == "lexical"


def test_unrelated_questions_other_users_and_answers_outside_the_window_are_not_retries() -> None:
    question = "What notice period applies to a tenancy in Zelland?"
    unrelated = [answer(1, 0, question), answer(2, 60, "How do I treat a mild fever?")]
    other_user = [answer(1, 0, question), answer(2, 60, question, source="key1:u2")]
    too_late = [answer(1, 0, question), answer(2, 601, "Zelland tenancy: notice period?")]

    assert found(*unrelated) == []
    assert found(*other_user) == []
    assert found(*too_late) == []


def test_the_same_question_at_once_is_a_regenerate_and_later_a_retry() -> None:
    question = "What notice period applies to a tenancy in Zelland?"

    assert found(answer(1, 0, question), answer(2, 20, question.upper())) == [
        ("regenerate", "a1", "a2")
    ]
    assert found(answer(1, 0, question), answer(2, 300, question)) == [("retry", "a1", "a2")]


def test_sessions_without_a_user_are_told_apart() -> None:
    question = "What notice period applies to a tenancy in Zelland?"
    one = answer(1, 0, question, source="key1/session:s1")

    assert found(one, answer(2, 20, question, source="key1/session:s2")) == []
    assert found(one, answer(2, 20, question, source="key1/session:s1")) == [
        ("regenerate", "a1", "a2")
    ]


def test_an_embedding_similarity_finds_a_paraphrase_the_lexical_one_misses() -> None:
    first = answer(1, 0, "Who runs Zelco?")
    retry = answer(2, 60, "Who heads Zelco?")
    embedder = WordEmbedder(synonyms={"heads": "runs"})
    embedding = EmbeddingSimilarity(embed=embedder.embed, threshold=0.75)

    assert found(first, retry) == []  # {runs, zelco} / {heads, zelco}: Jaccard 0.33
    (signal,) = find_signals([first, retry], embedding, SETTINGS)
    assert signal.rule == MinedRule.RETRY and signal.evidence["similarity_kind"] == "embedding"


@pytest.mark.parametrize(
    ("followup", "correction"),
    [
        ("No, that's wrong: Zelco is run by Mara Quill.", "Zelco is run by Mara Quill."),
        ("That is incorrect.", None),
        ("Wrong. It is actually six weeks in Zelland.", "six weeks in Zelland."),
        ("you\u2019re wrong", None),
        (
            "Nein, das ist falsch. Die Frist beträgt sechs Wochen.",
            "Die Frist beträgt sechs Wochen.",
        ),
        ("Das stimmt nicht", None),
        ("Non, c'est faux, le délai est de six semaines.", "le délai est de six semaines."),
        ("No, eso es incorrecto.", None),
    ],
)
def test_a_negative_followup_is_found_with_its_correction(
    followup: str, correction: str | None
) -> None:
    signal = only(answer(1, 0, "Who runs Zelco?"), answer(2, 30, followup))

    assert (signal.rule, signal.answer.id) == ("negative_followup", "a1")
    assert signal.chosen == correction
    assert signal.chosen_from == ("followup" if correction else None)
    assert signal.evidence["followup"] == followup


@pytest.mark.parametrize(
    "message",
    [
        "Is it wrong to break a lease early?",
        "No problem, thanks!",
        "Nothing else, thank you.",
        "Wrongful dismissal: what can I claim?",
        "No, that's wrong " + "and here is a long story " * 6,
    ],
)
def test_questions_that_merely_contain_negative_words_are_no_followups(message: str) -> None:
    assert negative_followup(message, max_words=30, min_correction_words=3) is None


def test_a_followup_only_answers_the_answer_just_before_it() -> None:
    signals = found(
        answer(1, 0, "Who runs Zelco?"),
        answer(2, 30, "What is a tort?"),
        answer(3, 60, "No, that's wrong."),
    )

    assert signals == [("negative_followup", "a2", "a3")]


def test_an_abandoned_stream_is_a_signal_on_its_own() -> None:
    signal = only(answer(1, 0, "Who runs Zelco?", finish=ABANDONED_FINISH_REASON))

    assert (signal.rule, signal.later, signal.chosen) == ("abandoned", None, None)


def test_a_retry_whose_answer_is_retried_again_keeps_only_its_rejected_side() -> None:
    question = "What notice period applies to a tenancy in Zelland?"
    signals = find_signals(
        [answer(1, 0, question), answer(2, 200, question), answer(3, 400, question)],
        LEXICAL,
        SETTINGS,
    )

    first, second = signals
    assert (first.answer.id, first.chosen) == ("a1", None)
    assert "chosen_dropped" in first.evidence
    assert (second.answer.id, second.chosen) == ("a2", "answer 3")


def test_a_retry_that_got_the_same_answer_again_keeps_only_its_rejected_side() -> None:
    question = "What notice period applies to a tenancy in Zelland?"
    first = answer(1, 0, question)
    same = replace(answer(2, 20, question), answer="Answer 1!")  # equal up to punctuation

    (signal,) = find_signals([first, same], LEXICAL, SETTINGS)

    assert signal.rule == "regenerate" and signal.chosen is None
    assert signal.evidence["chosen_dropped"] == "the later answer is the same as the rejected one"
