"""How alike two questions are: the embedding model's cosine, or a cheap lexical Jaccard.

* `EmbeddingSimilarity`: cosine of the sentence embeddings of the model the router and RAG
  use (all-MiniLM-L6-v2 by default). Measured on it (tests/integration/
  test_mining_similarity.py): close paraphrases 0.77-0.95 ("Who runs Zelco?" / "Who is the
  CEO of Zelco?" 0.80), loose ones 0.59-0.64 ("notice period for ending a tenancy" / "how
  much notice do I give my landlord"), related but different questions 0.66-0.89 ("capital
  of France" / "of Germany" 0.66, "stock split" / "reverse stock split" 0.89), unrelated ones
  near 0.1. The default threshold, 0.75, takes close paraphrases, misses loose ones and lets
  some neighbours through: the reason a retry alone never trains.
* `LexicalSimilarity`: Jaccard of the two questions' content words (casefolded `\\w+` runs,
  English stop words dropped). No model, so any process can mine; it finds rewordings that
  keep the content words ("What is a tort?" / "can you explain what a tort is" 1.0, "What is
  the notice period for ending a tenancy?" / "notice period to end my tenancy?" 0.6) and
  misses paraphrases that change them ("Who runs Zelco?" / "Who is the CEO of Zelco?" 0.33);
  it is fooled by neighbours that share words ("stock split" / "reverse stock split" 0.67).
  Default threshold 0.5.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

EMBEDDING = "embedding"
LEXICAL = "lexical"

_STOP_WORD_TEXT = (
    "a an and are as at be can could did do does for from how i in is it me my of on or "
    "please tell the this to was what when where which who why will with would you your "
    "about again explain know"
)
_STOP_WORDS = frozenset(_STOP_WORD_TEXT.split(" "))

Embed = Callable[[Sequence[str]], NDArray[np.float32]]


class QuestionSimilarity(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def matrix(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Pairwise similarity of `texts` (n x n, 1 on the diagonal). Blocking."""
        ...


@dataclass(frozen=True)
class EmbeddingSimilarity:
    embed: Embed
    threshold: float
    kind: str = EMBEDDING

    def matrix(self, texts: Sequence[str]) -> NDArray[np.float64]:
        if not texts:
            return np.zeros((0, 0))
        vectors = np.asarray(self.embed(list(texts)), dtype=np.float64)
        # A fake or foreign embedder need not return unit vectors.
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims: NDArray[np.float64] = np.clip(vectors @ vectors.T, -1.0, 1.0)
        return sims


def content_words(text: str) -> frozenset[str]:
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())
    return frozenset(w for w in words if w not in _STOP_WORDS)


@dataclass(frozen=True)
class LexicalSimilarity:
    threshold: float
    kind: str = LEXICAL

    def matrix(self, texts: Sequence[str]) -> NDArray[np.float64]:
        words = [content_words(t) for t in texts]
        sims = np.eye(len(texts))
        for i, left in enumerate(words):
            for j in range(i + 1, len(words)):
                right = words[j]
                union = len(left | right)
                sims[i, j] = sims[j, i] = len(left & right) / union if union else 0.0
        return sims


def same_question(left: str, right: str) -> bool:
    """Equal up to case, spacing and punctuation: what a regenerate sends again (and an
    answer that says nothing new)."""
    return _normalized(left) == _normalized(right)


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))
