"""A keyword router for unit tests; the real one (embeddings) is tested in tests/integration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from twinloop.routing.router import RouteResult

KEYWORDS = {"contract": "law", "fever": "med", "stock": "fin"}


@dataclass
class FakeRouter:
    questions: list[str] = field(default_factory=list)

    def route(self, question: str) -> RouteResult:
        self.questions.append(question)
        for word, domain in KEYWORDS.items():
            if word in question.lower():
                return RouteResult(domain=domain, score=0.9, scores={domain: 0.9})
        return RouteResult(domain="general", score=0.1, scores={"general": 0.1}, fallback=True)

    def route_many(self, questions: Sequence[str]) -> list[RouteResult]:
        return [self.route(q) for q in questions]

    def route_embedding(self, embedding: NDArray[np.float32]) -> RouteResult:
        # Keywords need the text: a gateway with a FakeRouter is given no query embeddings.
        raise NotImplementedError("FakeRouter routes by keyword, not by embedding")
