"""An answer log to mine: answers served to users at chosen times, and a fake embedder.

The miner's unit tests and its PostgreSQL integration test write the same log.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from twinloop.db.models import Answer
from twinloop.db.session import SessionMaker

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class AnswerLog:
    """Writes answers at `T0 + seconds`, served to `user` (or only a `session`)."""

    sessionmaker: SessionMaker

    async def served(
        self,
        seconds: float,
        question: str,
        answer: str = "An answer.",
        *,
        user: str | None = "key1:u1",
        session: str | None = None,
        domain: str = "law",
        finish_reason: str | None = "stop",
        preview: bool = False,
    ) -> str:
        row = Answer(
            route="answer",
            question=question,
            answer=answer,
            domain=domain,
            slot="blue",
            model="law-adapter",
            user_id=user,
            session_id=session,
            is_preview=preview,
            latency_ms=10.0,
            finish_reason=finish_reason,
            created_at=T0 + timedelta(seconds=seconds),
        )
        async with self.sessionmaker.begin() as db:
            db.add(row)
        return row.id


def after(seconds: float) -> datetime:
    """`T0 + seconds`: when to run a pass over the log."""
    return T0 + timedelta(seconds=seconds)


class WordEmbedder:
    """A bag-of-words embedder: each word a fixed random direction, a text their sum.

    Texts sharing most of their words score high, texts sharing none near 0; `synonyms`
    makes two different words one direction (a paraphrase the lexical similarity misses).
    """

    def __init__(self, synonyms: dict[str, str] | None = None, dim: int = 256) -> None:
        self._synonyms = synonyms or {}
        self._dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                word = self._synonyms.get(word, word)
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
                out[i] += np.random.default_rng(seed).standard_normal(self._dim)
        return out
