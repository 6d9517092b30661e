"""Pick a domain for a question from embedding similarity to each domain's exemplars.

Scoring rule: a domain's score is the highest cosine similarity between the
question and any one of its exemplars (max, not a mean over the top k). A
domain is a loose family of sub-topics — law covers tenancy, employment,
crime, contracts — and its exemplars are one or two per sub-topic, so a
question that matches one sub-topic closely belongs to the domain even though
it resembles the other exemplars little; a mean would punish exactly the
domains whose exemplars are most varied, and make adding an exemplar for a new
sub-topic lower the scores of the others. Max also keeps the score readable:
"this question is 0.62 like that exemplar".

Domains whose score reaches their threshold are candidates; the best score
wins, scores within `TIE_EPSILON` are a tie broken by priority (higher wins,
then by name so the result never depends on dict order); with no candidate
the fallback domain is served with its own score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from twinloop.routing.rules import RouterRules

TIE_EPSILON = 1e-6


class TextEmbedder(Protocol):
    """What the router needs from an embedding model (`rag.embeddings.Embedder` is one)."""

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class RouteResult:
    """The chosen domain, its score, and every domain's score (for logs and evaluation)."""

    domain: str
    score: float
    scores: Mapping[str, float]
    fallback: bool = False
    """True when no domain reached its threshold and the fallback was served."""


def _unit_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """Normalise rows again: a fake or foreign embedder need not return unit vectors."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


class DomainRouter:
    """Routes questions under one immutable `RouterRules`; build a new router for new rules."""

    def __init__(self, *, embedder: TextEmbedder, rules: RouterRules) -> None:
        self.rules = rules
        self._embedder = embedder
        self._domains: tuple[str, ...] = tuple(rules.domains)
        texts: list[str] = []
        owner: list[int] = []
        for index, name in enumerate(self._domains):
            exemplars = rules.domains[name].exemplars
            texts.extend(exemplars)
            owner.extend([index] * len(exemplars))
        self._exemplars = self._embed(texts)
        self._owner = np.asarray(owner, dtype=np.intp)
        self._thresholds = np.asarray(
            [rules.domains[name].threshold for name in self._domains], dtype=np.float64
        )
        self._priorities = tuple(rules.domains[name].priority for name in self._domains)

    def _embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        vectors = np.asarray(self._embedder.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"embedder returned shape {vectors.shape} for {len(texts)} texts")
        return _unit_rows(vectors)

    def route(self, question: str) -> RouteResult:
        return self.route_many([question])[0]

    def route_many(self, questions: Sequence[str]) -> list[RouteResult]:
        """Route several questions with one embedding call."""
        if not questions:
            return []
        return self._route_vectors(self._embed(questions))

    def route_embedding(self, embedding: NDArray[np.float32]) -> RouteResult:
        """Route a question already embedded by the same model (the gateway embeds each
        question once, for routing and retrieval: `rag.query_embeddings`)."""
        vector = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != self._exemplars.shape[1]:
            raise ValueError(
                f"embedding of dimension {vector.shape[1]}, the exemplars' is "
                f"{self._exemplars.shape[1]}"
            )
        return self._route_vectors(_unit_rows(vector))[0]

    def _route_vectors(self, vectors: NDArray[np.float32]) -> list[RouteResult]:
        similarity = vectors @ self._exemplars.T  # (questions, exemplars)
        # Per domain, the max over its exemplars (see the module docstring for why max).
        per_domain = np.full((len(vectors), len(self._domains)), -np.inf, dtype=np.float64)
        np.maximum.at(per_domain.T, self._owner, similarity.T.astype(np.float64))
        return [self._decide(row) for row in per_domain]

    def _decide(self, row: NDArray[np.float64]) -> RouteResult:
        scores = MappingProxyType(
            {name: float(score) for name, score in zip(self._domains, row, strict=True)}
        )
        candidates = [i for i in range(len(self._domains)) if row[i] >= self._thresholds[i]]
        if not candidates:
            fallback = self.rules.fallback
            return RouteResult(fallback, scores[fallback], scores, fallback=True)
        best = max(float(row[i]) for i in candidates)
        tied = [i for i in candidates if best - float(row[i]) <= TIE_EPSILON]
        # Highest priority first; among equal priorities the smallest name, so it is stable.
        winner = min(tied, key=lambda i: (-self._priorities[i], self._domains[i]))
        name = self._domains[winner]
        return RouteResult(name, scores[name], scores)
