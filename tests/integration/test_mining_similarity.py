"""The miner's question similarity on the real embedding model (all-MiniLM-L6-v2): the
figures `mining.embedding_threshold` (0.75) was chosen from, and retries found with it.

The unit tests compare questions with a bag-of-words fake; this is the real thing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from rag.embeddings import Embedder
from twinloop.mining.signals import LoggedAnswer, find_signals
from twinloop.mining.similarity import EmbeddingSimilarity
from twinloop.settings import MiningSettings
from twinloop.testing.answer_log import T0
from twinloop.weights.prepare import resolve_embedding_model

pytestmark = pytest.mark.integration

SETTINGS = MiningSettings()
# (question, a later one, whether it asks the same) with the cosine measured on MiniLM.
PAIRS = [
    ("Who runs Zelco?", "Who is the CEO of Zelco?", True),  # 0.80
    ("What is a tort?", "can you explain what a tort is", True),  # 0.95
    ("How long does a fever usually last?", "fever duration in adults?", True),  # 0.77
    ("What is the capital of France?", "What is the capital of Germany?", False),  # 0.66
    ("Who runs Zelco?", "Who founded Zelco?", False),  # 0.74
    ("Who runs Zelco?", "What is a tort?", False),  # 0.11
    ("How do I treat a burn?", "What is the best index fund?", False),  # 0.01
]


@pytest.fixture(scope="module")
def similarity() -> EmbeddingSimilarity:
    embedder = Embedder(resolve_embedding_model(None))
    return EmbeddingSimilarity(embed=embedder.embed, threshold=SETTINGS.embedding_threshold)


@pytest.mark.parametrize(("first", "later", "same"), PAIRS)
def test_the_threshold_tells_these_paraphrases_from_these_neighbours(
    similarity: EmbeddingSimilarity, first: str, later: str, same: bool
) -> None:
    score = float(similarity.matrix([first, later])[0, 1])

    assert (score >= similarity.threshold) is same, f"{score:.3f}"


def test_known_misses_and_false_retries_stay_what_the_settings_say(
    similarity: EmbeddingSimilarity,
) -> None:
    """What the threshold gets wrong, measured: why a retry alone never trains."""
    loose = similarity.matrix(
        [
            "What is the notice period for ending a tenancy?",
            "How much notice do I have to give my landlord?",
        ]
    )[0, 1]
    neighbours = similarity.matrix(["What is a stock split?", "What is a reverse stock split?"])[
        0, 1
    ]

    assert loose < similarity.threshold  # a paraphrase missed
    assert neighbours >= similarity.threshold  # a different question taken for a retry


def test_a_paraphrased_retry_is_mined_and_an_unrelated_question_is_not(
    similarity: EmbeddingSimilarity,
) -> None:
    def served(n: int, seconds: float, question: str) -> LoggedAnswer:
        return LoggedAnswer(
            id=f"a{n}",
            source="key1:u1",
            domain="fin",
            question=question,
            answer=f"answer {n}",
            created_at=T0 + timedelta(seconds=seconds),
        )

    log = [
        served(1, 0, "Who runs Zelco?"),
        served(2, 60, "What is a tort?"),
        served(3, 120, "Who is the CEO of Zelco?"),
    ]

    signals = find_signals(log, similarity, SETTINGS)

    assert [(s.rule, s.answer.id, s.later and s.later.id) for s in signals] == [
        ("retry", "a1", "a3")
    ]
    assert signals[0].similarity is not None and signals[0].similarity >= 0.75
